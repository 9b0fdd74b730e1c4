//! The one stage runner of both recipe kinds.
//!
//! - A stage is a child process of this binary (`ims3 --device <d> <subcommand> ...`, its
//!   command line built from the subcommand's typed `Args`) or a step run in this process; a
//!   finished stage leaves `<run>/<stage>.done` and is skipped on the next run.
//! - `--from <stage>` clears the markers of that stage and every later one, and their outputs,
//!   so they are redone from nothing (fine-tuning and sampling would otherwise resume).
//! - Independent stages run `workers` at a time, each a process of its own; the CPU backend's
//!   threads (`RAYON_NUM_THREADS`) are shared out among them unless the user set them. Every
//!   stage of a batch is tried; the first failure is reported after the others finished.
//! - A dependency graph of stages ([`Runner::graph`]): a worker takes the first stage, in the
//!   order given, whose prerequisites have finished, so a long stage (fine-tuning) runs beside
//!   the work that does not need it; a failed stage's dependants are not started.
//! - Several devices (`ims3 reproduce --devices cuda:0,cuda:1`): a shardable stage (sampling,
//!   S3's encoding, evaluation: one work item per class or seed, each from its own random
//!   stream) runs as one shard per device (`--shard i/n`, stage `<name>@i`), then once more
//!   on the first device to complete and aggregate; the outputs equal one device's, bit for bit.
//! - Each stage's time is recorded for the manifest and the results.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use ims3_backend::DeviceSpec;
use serde::Serialize;

/// One `ims3 reproduce` invocation: what was asked for and where things go.
pub struct Invocation {
    /// The recipe as named on the command line (a built-in name or a path).
    pub recipe: String,
    /// The recipe file's text (recorded in the manifest).
    pub text: String,
    pub device: DeviceSpec,
    /// Devices that shardable stages are spread over (empty or one: no sharding).
    pub devices: Vec<DeviceSpec>,
    /// Run only the stages of this kind (a scheduler's job; `ims3 plan`), and of a shardable
    /// stage only this shard.
    pub only: Option<(String, Option<ims3_util::Shard>)>,
    pub from: Option<String>,
    pub allow_cpu: bool,
    pub run_dir: PathBuf,
    pub results: PathBuf,
    pub cache: PathBuf,
}

/// One kind of stage: a name that its stages' names start with, and the outputs (relative to
/// the run directory) that redoing it must remove first.
pub struct StageKind {
    pub name: &'static str,
    pub outputs: &'static [&'static str],
}

/// One stage of a dependency graph ([`Runner::graph`]): run once every stage named in `after`
/// has finished (a name outside the graph, such as a stage of an earlier `--only` job, counts as
/// finished).
pub struct Node<'f> {
    pub name: String,
    pub after: Vec<String>,
    pub work: Work<'f>,
}

/// What a [`Node`] does.
pub enum Work<'f> {
    /// `ims3 --device <d> <argv>`; `shardable` when the subcommand takes `--shard i/n`.
    Child { argv: Vec<String>, shardable: bool },
    /// A step in this process.
    Local(Box<dyn FnOnce() -> Result<()> + Send + 'f>),
}

impl<'f> Node<'f> {
    /// A child stage whose subcommand takes `--shard i/n`.
    pub fn sharded(name: impl Into<String>, argv: Vec<String>, after: &[&str]) -> Self {
        Self { name: name.into(), after: after.iter().map(|s| s.to_string()).collect(), work: Work::Child { argv, shardable: true } }
    }

    /// A child stage that runs whole on one device.
    pub fn child(name: impl Into<String>, argv: Vec<String>, after: &[&str]) -> Self {
        Self { name: name.into(), after: after.iter().map(|s| s.to_string()).collect(), work: Work::Child { argv, shardable: false } }
    }

    /// A step in this process.
    pub fn local(name: impl Into<String>, after: &[&str], f: impl FnOnce() -> Result<()> + Send + 'f) -> Self {
        Self { name: name.into(), after: after.iter().map(|s| s.to_string()).collect(), work: Work::Local(Box::new(f)) }
    }
}

/// Where a graph node stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NodeState {
    Pending,
    Running,
    Done,
    /// Failed, or not run because a prerequisite failed.
    Failed,
}

/// A stage's time in this invocation.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub stage: String,
    pub seconds: f64,
    pub skipped: bool,
}

pub struct Runner<'a> {
    exe: PathBuf,
    device: &'a DeviceSpec,
    devices: &'a [DeviceSpec],
    recipe_text: &'a str,
    pub run_dir: PathBuf,
    /// Independent stages run this many at once.
    pub workers: usize,
    pub timings: Vec<Timing>,
    /// The stage kinds `--from` asked to redo.
    redone: Vec<&'static str>,
    kinds: Vec<&'static str>,
    only: Option<(String, Option<ims3_util::Shard>)>,
}

impl<'a> Runner<'a> {
    /// A runner for `at`'s run directory (created), `--from` applied: the markers and outputs
    /// of that stage kind and every later one in `kinds` are removed.
    pub fn new(at: &'a Invocation, kinds: &[StageKind], workers: usize) -> Result<Self> {
        std::fs::create_dir_all(&at.run_dir).with_context(|| format!("{}: cannot create", at.run_dir.display()))?;
        let mut runner =
            Self {
                exe: std::env::current_exe()?,
                device: &at.device,
                devices: &at.devices,
                recipe_text: &at.text,
                run_dir: at.run_dir.clone(),
                workers: workers.max(1),
                timings: Vec::new(),
                redone: vec![],
                kinds: kinds.iter().map(|k| k.name).collect(),
                only: at.only.clone(),
            };
        if let Some((only, _)) = &at.only {
            ensure!(runner.kinds.contains(&only.as_str()), "unknown stage '{only}' (stages: {})", runner.kinds.join(", "));
        }
        if let Some(from) = &at.from {
            runner.redone = runner.clear_from(kinds, from)?;
        }
        Ok(runner)
    }

    /// The kind of stage `name` (the kind whose name starts it).
    fn kind_of(&self, name: &str) -> &'static str {
        self.kinds.iter().copied().filter(|k| name.starts_with(k)).max_by_key(|k| k.len()).unwrap_or("")
    }

    /// Whether this invocation runs stage `name` (all of them, or those of `--only`'s kind).
    fn runs(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|(k, _)| k == self.kind_of(name))
    }

    /// True when `--only` named `kind`: the caller stops after that stage kind.
    pub fn stop_after(&self, kind: &str) -> bool {
        self.only.as_ref().is_some_and(|(k, _)| k == kind)
    }

    /// Whether `--from` asked to redo stages of `kind` (their outputs outside the run
    /// directory, such as evaluation items under results/, are the caller's to clear).
    pub fn redoes(&self, kind: &str) -> bool {
        self.redone.contains(&kind)
    }

    /// `--from <stage>`: removes the markers and outputs of `from` and every later kind; returns
    /// those kinds.
    fn clear_from(&self, kinds: &[StageKind], from: &str) -> Result<Vec<&'static str>> {
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        let k = names.iter().position(|s| *s == from).with_context(|| format!("unknown stage '{from}' (stages: {})", names.join(", ")))?;
        for kind in &kinds[k..] {
            for e in std::fs::read_dir(&self.run_dir)?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(kind.name) && n.ends_with(".done") {
                    std::fs::remove_file(e.path())?;
                }
            }
            for o in kind.outputs {
                let d = self.run_dir.join(o);
                if d.exists() {
                    std::fs::remove_dir_all(&d).with_context(|| format!("{}: cannot remove", d.display()))?;
                }
            }
        }
        Ok(kinds[k..].iter().map(|k| k.name).collect())
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.done"))
    }

    /// Runs `ims3 --device <d> <argv>` as stage `name` unless its marker says it finished
    /// before; writes the marker after a successful run. `cpu_threads`: the CPU backend's
    /// worker threads for this stage. Returns (seconds, skipped).
    fn run_child(&self, name: &str, argv: &[String], device: &DeviceSpec, cpu_threads: usize) -> Result<(f64, bool)> {
        let marker = self.marker(name);
        if marker.is_file() {
            eprintln!("reproduce: {name}: done before, skipped");
            return Ok((0.0, true));
        }
        eprintln!("reproduce: {name}: ims3 {}", argv.join(" "));
        let t = Instant::now();
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("--device").arg(device.to_string()).args(argv);
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            cmd.env("RAYON_NUM_THREADS", cpu_threads.max(1).to_string());
        }
        let status = cmd.status()?;
        ensure!(status.success(), "stage {name} failed ({status}); fix the cause and rerun the same command to continue");
        let secs = t.elapsed().as_secs_f64();
        ims3_util::atomic_write(&marker, format!("{{\"seconds\": {secs}}}\n").as_bytes())?;
        Ok((secs, false))
    }

    /// Runs independent child stages `(name, argv)`, `workers` at a time: a worker takes the
    /// next stage as soon as its last one ends ([`Runner::pool`] with no prerequisites).
    pub fn children(&mut self, stages: Vec<(String, Vec<String>)>) -> Result<()> {
        let nodes: Vec<Node> = stages.into_iter().filter(|(n, _)| self.runs(n)).map(|(n, argv)| Node::child(n, argv, &[])).collect();
        let deps = vec![Vec::new(); nodes.len()];
        self.pool(nodes, &deps)
    }

    /// Removes `dir` if `--from` redoes stages of `kind` (outputs kept outside the run folder).
    pub fn clear_if_redone(&self, kind: &str, dir: &Path) -> Result<()> {
        if self.redoes(kind) && dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
        }
        Ok(())
    }

    /// One child stage.
    pub fn child(&mut self, name: &str, argv: Vec<String>) -> Result<()> {
        self.children(vec![(name.to_string(), argv)])
    }

    /// Independent stages whose subcommand takes `--shard i/n`: with several devices, first
    /// one worker per device runs its shard of every stage (`<name>@i`), then
    /// [`Runner::children`] runs each stage once more to complete and aggregate.
    pub fn sharded(&mut self, stages: Vec<(String, Vec<String>)>) -> Result<()> {
        // A scheduler's array task: only its shard of each stage, no completion.
        if let Some((_, Some(shard))) = &self.only {
            let shard = *shard;
            let stages: Vec<(String, Vec<String>)> = stages
                .into_iter()
                .filter(|(n, _)| self.runs(n))
                .map(|(n, mut argv)| {
                    argv.extend(["--shard".to_string(), shard.to_string()]);
                    (format!("{n}@{}", shard.index), argv)
                })
                .collect();
            return self.children(stages);
        }
        let stages: Vec<(String, Vec<String>)> = stages.into_iter().filter(|(n, _)| self.runs(n)).collect();
        let n = self.devices.len();
        if n > 1 {
            let share = std::thread::available_parallelism().map_or(1, |c| c.get()).div_ceil(n).max(1);
            let this = &*self;
            let outcomes: Vec<Vec<(String, Result<(f64, bool)>)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let stages = &stages;
                        s.spawn(move || {
                            let mut done = Vec::new();
                            for (name, argv) in stages {
                                let mut argv = argv.clone();
                                argv.extend(["--shard".to_string(), format!("{i}/{n}")]);
                                let shard_name = format!("{name}@{i}");
                                let r = this.run_child(&shard_name, &argv, &this.devices[i], share);
                                let failed = r.is_err();
                                done.push((shard_name, r));
                                if failed {
                                    break;
                                }
                            }
                            done
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a shard worker panicked")).collect()
            });
            let mut first_err = None;
            for (name, r) in outcomes.into_iter().flatten() {
                match r {
                    Ok((seconds, skipped)) => self.timings.push(Timing { stage: name, seconds, skipped }),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        self.children(stages)
    }

    /// A stage run in this process, with a marker like the child stages.
    pub fn local(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        if !self.runs(name) {
            return Ok(());
        }
        let (seconds, skipped) = self.run_local(name, f)?;
        self.timings.push(Timing { stage: name.into(), seconds, skipped });
        Ok(())
    }

    /// Runs `f` as stage `name` unless its marker says it finished before; writes the marker
    /// after it succeeded. Returns (seconds, skipped).
    fn run_local(&self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<(f64, bool)> {
        if self.marker(name).is_file() {
            eprintln!("reproduce: {name}: done before, skipped");
            return Ok((0.0, true));
        }
        let t = Instant::now();
        f()?;
        let seconds = t.elapsed().as_secs_f64();
        ims3_util::atomic_write(&self.marker(name), format!("{{\"seconds\": {seconds}}}\n").as_bytes())?;
        Ok((seconds, false))
    }

    /// Runs a dependency graph of stages (each `after` names earlier nodes only). On one device,
    /// `workers` threads each take the first node, in the order given, whose prerequisites have
    /// finished: order the nodes by priority (the longest chain first). With several devices,
    /// or as a scheduler's `--only` job, the graph runs in waves (every node whose prerequisites
    /// finished, then the next wave), a wave's shardable children spread over the devices as
    /// [`Runner::sharded`] does. Every node that can run is run; the first failure is returned.
    pub fn graph(&mut self, nodes: Vec<Node<'_>>) -> Result<()> {
        let nodes: Vec<Node> = nodes.into_iter().filter(|n| self.runs(&n.name)).collect();
        let index = |name: &str| nodes.iter().position(|n| n.name == name);
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let mut d = Vec::new();
            for a in &n.after {
                if let Some(j) = index(a) {
                    ensure!(j < i, "stage {} must come after its prerequisite {a}", n.name);
                    d.push(j);
                }
            }
            deps.push(d);
        }
        if self.devices.len() > 1 || self.only.is_some() {
            return self.graph_in_waves(nodes, &deps);
        }
        self.pool(nodes, &deps)
    }

    /// The workers of [`Runner::graph`] and [`Runner::children`] on this invocation's device:
    /// `workers` threads, each taking the first node (in order) whose prerequisites `deps[i]`
    /// (indices of earlier nodes) have finished; a failed node's dependants are not started.
    fn pool(&mut self, nodes: Vec<Node<'_>>, deps: &[Vec<usize>]) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let works: Vec<Mutex<Option<Work>>> = nodes.into_iter().map(|n| Mutex::new(Some(n.work))).collect();
        let state = Mutex::new(vec![NodeState::Pending; names.len()]);
        let changed = Condvar::new();
        type Outcome = Mutex<Option<Result<(f64, bool)>>>;
        let outcomes: Vec<Outcome> = names.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.workers.min(names.len()).max(1);
        let share = std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(workers).max(1);
        let this = &*self;
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let next = {
                            let mut st = state.lock().expect("no poisoning");
                            loop {
                                // A node whose prerequisite failed will not run.
                                for i in 0..st.len() {
                                    if st[i] == NodeState::Pending && deps[i].iter().any(|&d| st[d] == NodeState::Failed) {
                                        st[i] = NodeState::Failed;
                                    }
                                }
                                if let Some(i) = (0..st.len()).find(|&i| st[i] == NodeState::Pending && deps[i].iter().all(|&d| st[d] == NodeState::Done)) {
                                    st[i] = NodeState::Running;
                                    break Some(i);
                                }
                                if !st.contains(&NodeState::Running) {
                                    break None;
                                }
                                st = changed.wait(st).expect("no poisoning");
                            }
                        };
                        let Some(i) = next else { break };
                        let work = works[i].lock().expect("no poisoning").take().expect("each node runs once");
                        let r = match work {
                            Work::Child { argv, .. } => this.run_child(&names[i], &argv, this.device, share),
                            Work::Local(f) => this.run_local(&names[i], f),
                        };
                        let ok = r.is_ok();
                        *outcomes[i].lock().expect("no poisoning") = Some(r);
                        state.lock().expect("no poisoning")[i] = if ok { NodeState::Done } else { NodeState::Failed };
                        changed.notify_all();
                    }
                });
            }
        });
        let mut first_err = None;
        for (name, r) in names.iter().zip(outcomes) {
            match r.into_inner().expect("no poisoning") {
                Some(Ok((seconds, skipped))) => self.timings.push(Timing { stage: name.clone(), seconds, skipped }),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => eprintln!("reproduce: {name}: not run (a stage it needs failed)"),
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// [`Runner::graph`] in waves: the nodes whose prerequisites finished, locals first, then the
    /// shardable children through [`Runner::sharded`], then the others through
    /// [`Runner::children`]; stops at the first failed wave.
    fn graph_in_waves(&mut self, nodes: Vec<Node<'_>>, deps: &[Vec<usize>]) -> Result<()> {
        let mut done = vec![false; nodes.len()];
        let mut pending: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        while done.iter().any(|d| !d) {
            let wave: Vec<usize> = (0..pending.len()).filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d])).collect();
            let (mut sharded, mut whole) = (Vec::new(), Vec::new());
            for &i in &wave {
                let node = pending[i].take().expect("each node runs once");
                match node.work {
                    Work::Local(f) => self.local(&node.name, f)?,
                    Work::Child { argv, shardable: true } => sharded.push((node.name, argv)),
                    Work::Child { argv, shardable: false } => whole.push((node.name, argv)),
                }
            }
            self.sharded(sharded)?;
            self.children(whole)?;
            for i in wave {
                done[i] = true;
            }
        }
        Ok(())
    }

    /// True when this invocation is a scheduler's `--only` job (one stage kind, then stop).
    pub fn only_one_kind(&self) -> bool {
        self.only.is_some()
    }

    /// A step that always runs (the report), timed.
    pub fn always<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f()?;
        self.timings.push(Timing { stage: name.into(), seconds: t.elapsed().as_secs_f64(), skipped: false });
        Ok(out)
    }

    /// The manifest of this run: the command line, the recipe's text, the revision, the device
    /// and every stage's time, plus the recipe kind's own `fields`; written to each of `to`.
    pub fn write_manifest(&self, revision: Option<&str>, fields: serde_json::Value, to: &[&Path]) -> Result<()> {
        let mut m = serde_json::json!({
            "command": crate::commands::command_line(),
            "recipe": self.recipe_text,
            "git_revision": revision,
            "device": self.device.to_string(),
            "stages": self.timings,
        });
        if let (Some(m), serde_json::Value::Object(extra)) = (m.as_object_mut(), fields) {
            m.extend(extra);
        }
        for dir in to {
            ims3_util::write_json(&dir.join("manifest.json"), &m)?;
        }
        Ok(())
    }
}

/// `HEAD`'s commit, with `-dirty` appended (as `git describe --dirty` does) when tracked files
/// outside `results/` have uncommitted changes, so a record never claims a commit it was not run
/// from. Jobs call it before they write anything (their own outputs under `results/` are
/// tracked and would otherwise mark every rerun dirty).
pub fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use anyhow::anyhow;

    use super::*;

    fn invocation(dir: &Path) -> Invocation {
        Invocation {
            recipe: "test".into(),
            text: String::new(),
            device: DeviceSpec::Cpu,
            devices: vec![],
            only: None,
            from: None,
            allow_cpu: true,
            run_dir: dir.join("run"),
            results: dir.join("results"),
            cache: dir.join("cache"),
        }
    }

    const KINDS: [StageKind; 3] = [StageKind { name: "long", outputs: &[] }, StageKind { name: "free", outputs: &[] }, StageKind { name: "after", outputs: &[] }];

    /// `long` waits (up to 20 s) for `free`, which does not depend on it: with two workers it
    /// runs beside it and returns true; with one worker `free` cannot start before `long` ends.
    fn run_graph(workers: usize) -> (Result<()>, bool, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let at = invocation(dir.path());
        let mut runner = Runner::new(&at, &KINDS, workers).unwrap();
        let free_ran = AtomicBool::new(false);
        let saw_free = AtomicBool::new(false);
        let order = Mutex::new(Vec::new());
        let r = runner.graph(vec![
            Node::local("long", &[], || {
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(if workers > 1 { 20 } else { 1 }) {
                    if free_ran.load(Ordering::SeqCst) {
                        saw_free.store(true, Ordering::SeqCst);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                order.lock().unwrap().push("long".to_string());
                Ok(())
            }),
            Node::local("after-long", &["long"], || {
                order.lock().unwrap().push("after-long".to_string());
                Ok(())
            }),
            Node::local("free", &[], || {
                free_ran.store(true, Ordering::SeqCst);
                order.lock().unwrap().push("free".to_string());
                Ok(())
            }),
        ]);
        let order = order.into_inner().unwrap();
        (r, saw_free.load(Ordering::SeqCst), order)
    }

    #[test]
    fn a_long_stage_runs_beside_the_stages_that_do_not_need_it() {
        let (r, overlapped, order) = run_graph(2);
        r.unwrap();
        assert!(overlapped, "free did not run while long was running: {order:?}");
        let pos = |n: &str| order.iter().position(|s| s == n).unwrap();
        assert!(pos("long") < pos("after-long"), "{order:?}");
        // One worker: strictly in priority order as prerequisites allow.
        let (r, overlapped, order) = run_graph(1);
        r.unwrap();
        assert!(!overlapped);
        assert_eq!(order, ["long", "after-long", "free"]);
    }

    #[test]
    fn a_failed_stage_stops_its_dependants_only() {
        let dir = tempfile::tempdir().unwrap();
        let at = invocation(dir.path());
        let mut runner = Runner::new(&at, &KINDS, 2).unwrap();
        let ran = Mutex::new(Vec::new());
        let r = runner.graph(vec![
            Node::local("long", &[], || Err(anyhow!("boom"))),
            Node::local("after-long", &["long"], || {
                ran.lock().unwrap().push("after-long");
                Ok(())
            }),
            Node::local("free", &[], || {
                ran.lock().unwrap().push("free");
                Ok(())
            }),
        ]);
        assert_eq!(r.unwrap_err().to_string(), "boom");
        assert_eq!(*ran.lock().unwrap(), ["free"]);
        assert!(!at.run_dir.join("long.done").exists() && at.run_dir.join("free.done").is_file());
        // The rerun skips what finished and runs the rest.
        let mut runner = Runner::new(&at, &KINDS, 2).unwrap();
        runner.graph(vec![Node::local("long", &[], || Ok(())), Node::local("after-long", &["long"], || Ok(())), Node::local("free", &[], || panic!("finished before"))]).unwrap();
        assert_eq!(runner.timings.iter().map(|t| (t.stage.as_str(), t.skipped)).collect::<Vec<_>>(), [("long", false), ("after-long", false), ("free", true)]);
        // A prerequisite named after its dependant is refused.
        let mut runner = Runner::new(&at, &KINDS, 2).unwrap();
        assert!(runner.graph(vec![Node::local("after-long", &["long"], || Ok(())), Node::local("long", &[], || Ok(()))]).is_err());
    }
}
