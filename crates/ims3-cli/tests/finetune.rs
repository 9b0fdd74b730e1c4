//! `ims3 finetune` end to end on the fixtures' tiny DiT and VAE and a generated image folder:
//! runs, writes its records, resumes and extends, and refuses bad input in one line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ims3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ims3"))
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dit: PathBuf,
    vae: PathBuf,
    heads: String,
    image_size: usize,
    spec: PathBuf,
}

/// Two classes of 6 generated 40 x 40 PNGs each, a spec naming them with labels inside the
/// fixture DiT's range, and the image size that gives the DiT's latent size through the VAE.
fn setup() -> Setup {
    let dit_case = ims3_fixtures::case_of_kind("dit").dir;
    let vae_case = ims3_fixtures::case_of_kind("vae").dir;
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dit_case.join("fixture.json")).unwrap()).unwrap();
    let vae_cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(vae_case.join("config.json")).unwrap()).unwrap();
    let down = 1usize << (vae_cfg["block_out_channels"].as_array().unwrap().len() - 1);
    let image_size = fx["input_size"].as_u64().unwrap() as usize * down;
    let classes = fx["num_classes"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for (k, wnid) in ["n00000002", "n00000001"].iter().enumerate() {
        let d = root.join("train").join(wnid);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6u32 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x * 6 + i * 20) as u8, (y * 6 + k as u32 * 90) as u8, ((x + y) * 3) as u8]));
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
    let spec = dir.path().join("two.toml");
    std::fs::write(
        &spec,
        format!("name = \"two\"\nclasses = [\n  {{ wnid = \"n00000002\", imagenet = {}, name = \"b\" }},\n  {{ wnid = \"n00000001\", imagenet = 0, name = \"a\" }},\n]\n", classes - 1),
    )
    .unwrap();
    Setup {
        root,
        dit: dit_case.join("weights.pt"),
        vae: vae_case,
        heads: fx["num_heads"].to_string(),
        image_size,
        spec,
        _dir: dir,
    }
}

fn finetune(s: &Setup, out: &Path, extra: &[&str]) -> std::process::Output {
    ims3()
        .arg("finetune")
        .args(["--dit".as_ref(), s.dit.as_os_str()])
        .args(["--vae".as_ref(), s.vae.as_os_str()])
        .args(["--data".as_ref(), s.root.as_os_str()])
        .args(["--dataset".as_ref(), s.spec.as_os_str()])
        .args(["--out".as_ref(), out.as_os_str()])
        .args(["--heads", &s.heads, "--image-size", &s.image_size.to_string(), "--batch", "4"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn finetune_runs_records_and_resumes() {
    let s = setup();
    let out = s._dir.path().join("run");
    let recipe = s._dir.path().join("recipe.toml");
    std::fs::write(&recipe, "checkpoint_every = 2\nlog_every = 1\n[loss]\nim_lambda = 0.002\n").unwrap();
    let r = finetune(&s, &out, &["--steps", "3", "--train-config", recipe.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("subset cut from ImageNet") && stderr.contains("Difffit trains"), "{stderr}");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["steps_done"], 3);
    assert_eq!(run["labels"], "imagenet");
    assert_eq!(run["config"]["checkpoint_every"], 2);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("data-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["splits"][0]["files"], 12);
    assert!(out.join("latents.safetensors").is_file());
    assert!(out.join("checkpoints/step-00000003.safetensors").is_file());
    let losses = std::fs::read_to_string(out.join("losses.svg")).unwrap();
    assert!(losses.contains("\nMSE (noise prediction)\n</text>") && losses.contains("\nIM term\n</text>"), "losses.svg");

    // Extending the budget resumes at step 3 and reuses the latent cache.
    let r = finetune(&s, &out, &["--steps", "5", "--train-config", recipe.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("5 of 5 steps (resumed at 3)"), "{stdout}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("from the cache"));
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 5);
}

#[test]
fn finetune_refuses_bad_input_in_one_line() {
    let s = setup();
    let out = s._dir.path().join("run");
    let bad_recipe = s._dir.path().join("bad.toml");
    std::fs::write(&bad_recipe, "batch_size = 4\nlearning_rate = 0.1\n").unwrap();
    let one_line = |r: std::process::Output, want: &str| {
        assert_eq!(r.status.code(), Some(1), "{want}");
        let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
        assert!(err.starts_with("ims3: error:") && !err.contains('\n') && err.contains(want), "{want}: {err}");
    };
    one_line(finetune(&s, &out, &["--steps", "1", "--train-config", bad_recipe.to_str().unwrap()]), "unknown field `learning_rate`");
    let other = |dataset: &str| {
        ims3()
            .args(["finetune", "--dataset", dataset, "--out"])
            .arg(&out)
            .args(["--dit".as_ref(), s.dit.as_os_str(), "--vae".as_ref(), s.vae.as_os_str(), "--data".as_ref(), s.root.as_os_str()])
            .output()
            .unwrap()
    };
    one_line(other("imagefruit"), "unknown dataset 'imagefruit'");
    // The real ImageWoof spec against this folder: the missing class folders are named.
    one_line(other("imagewoof"), "does not match the imagewoof spec: missing class folders n02086240");
}

/// The later stages on the same tiny setup: sample candidates from the fine-tuned checkpoint,
/// then train and test a ConvNet on the sampled images.
#[test]
fn sample_then_eval_end_to_end() {
    let s = setup();
    let run = s._dir.path().join("run");
    let r = finetune(&s, &run, &["--steps", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ck = run.join("checkpoints/step-00000002.safetensors");
    let cands = s._dir.path().join("candidates");
    let sample = |extra: &[&str]| {
        ims3()
            .arg("sample")
            .args(["--dit".as_ref(), s.dit.as_os_str(), "--vae".as_ref(), s.vae.as_os_str(), "--dataset".as_ref(), s.spec.as_os_str()])
            .args(["--finetuned".as_ref(), ck.as_os_str(), "--out".as_ref(), cands.as_os_str()])
            .args(["--heads", &s.heads, "--per-class", "3", "--batch", "2", "--steps", "4"])
            .args(extra)
            .output()
            .unwrap()
    };
    let r = sample(&[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for wnid in ["n00000001", "n00000002"] {
        assert_eq!(std::fs::read_dir(cands.join("png").join(wnid)).unwrap().count(), 3);
        assert!(cands.join(format!("{wnid}.safetensors")).is_file());
    }
    let r = sample(&[]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("already has 3 images, skipped"));

    let out = s._dir.path().join("eval");
    let r = ims3()
        .arg("eval")
        .args(["--distilled".as_ref(), cands.join("png").as_os_str(), "--test".as_ref(), s.root.join("train").as_os_str()])
        .args(["--dataset".as_ref(), s.spec.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .args(["--net", "convnet3", "--size", "32", "--epochs", "2", "--seeds", "0,1", "--lr", "0.01"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(rep["seeds"].as_array().unwrap().len(), 2);
    assert_eq!(rep["train_images"], 6);
    assert_eq!(rep["test_images"], 12);
    let md = std::fs::read_to_string(out.join("eval.md")).unwrap();
    assert!(md.contains("final epoch") && md.contains("selected on the test split"), "{md}");
    let curve = std::fs::read_to_string(out.join("curve.svg")).unwrap();
    assert!(curve.contains("\nepoch\n</text>") && curve.contains("\nConvNet-3\n</text>"), "curve.svg");

    // The seeds shared by two workers (--shard), then a run that writes the report: the same
    // per-seed results as the single run; a rerun trains nothing.
    let sharded = s._dir.path().join("eval-shards");
    let eval = |extra: &[&str]| {
        let r = ims3()
            .arg("eval")
            .args(["--distilled".as_ref(), cands.join("png").as_os_str(), "--test".as_ref(), s.root.join("train").as_os_str()])
            .args(["--dataset".as_ref(), s.spec.as_os_str(), "--out".as_ref(), sharded.as_os_str()])
            .args(["--net", "convnet3", "--size", "32", "--epochs", "2", "--seeds", "0,1", "--lr", "0.01"])
            .args(extra)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stderr).into_owned()
    };
    eval(&["--shard", "1/2"]);
    assert!(!sharded.join("eval.json").exists() && sharded.join("seeds/seed-1.json").is_file());
    eval(&["--shard", "0/2"]);
    let last = eval(&[]);
    assert!(last.contains("0 of 2 seeds to run"), "{last}");
    let strip = |v: serde_json::Value| -> Vec<serde_json::Value> {
        v["seeds"].as_array().unwrap().iter().map(|s| { let mut s = s.clone(); s.as_object_mut().unwrap().remove("seconds"); s }).collect()
    };
    let read = |d: &std::path::Path| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(d.join("eval.json")).unwrap()).unwrap();
    assert_eq!(strip(read(&sharded)), strip(read(&out)));
}

/// `ims3 reproduce` with a recipe on the fixtures: every stage, then a rerun that skips them
/// all, `--from eval`, and the recipe errors.
#[test]
fn reproduce_runs_every_stage_and_resumes() {
    let s = setup();
    // A val split beside train (the same generated images suffice for the plumbing).
    let val = s.root.join("val");
    for wnid in ["n00000001", "n00000002"] {
        std::fs::create_dir_all(val.join(wnid)).unwrap();
        for e in std::fs::read_dir(s.root.join("train").join(wnid)).unwrap().flatten().take(3) {
            std::fs::copy(e.path(), val.join(wnid).join(e.file_name())).unwrap();
        }
    }
    let encoder = ims3_fixtures::case_of_kind("resnet18_torchvision").dir.join("weights.pth");
    let recipe = s._dir.path().join("tiny.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"tiny\"\ndataset = \"{}\"\nipc = 2\ngpu = false\nfinetune = true\nimage_size = {}\nrandom_baseline = \"tiny-random\"\nfull_baseline = \"tiny-full\"\n\
             [train]\nmax_steps = 2\nbatch_size = 4\n\
             [sample]\nsteps = \"3\"\nbatch = 2\n\
             [select]\ngroups = 2\nreal_max = 4\n\
             [eval]\nnets = [\"convnet3\"]\nseeds = [0]\nsize = 32\nepochs = 2\nlr = 0.01\n\
             [assets]\ndit = \"{}\"\nvae = \"{}\"\nencoder = \"{}\"\ndata = \"{}\"\nheads = {}\n\
             [paper]\nconvnet3 = 12.5\n",
            s.spec.display(), s.image_size, s.dit.display(), s.vae.display(), encoder.display(), s.root.display(), s.heads
        ),
    )
    .unwrap();
    let run_dir = s._dir.path().join("runs");
    let results = s._dir.path().join("results").join("tiny");
    let reproduce = |extra: &[&str]| {
        ims3()
            .arg("reproduce")
            .arg(&recipe)
            .args(["--run-dir".as_ref(), run_dir.as_os_str(), "--results".as_ref(), results.as_os_str()])
            .args(extra)
            .output()
            .unwrap()
    };
    // The random-real baseline of the same protocol first: its results give the IOR column.
    let random = s._dir.path().join("tiny-random.toml");
    std::fs::write(
        &random,
        format!(
            "name = \"tiny-random\"\ndataset = \"{}\"\nipc = 2\ngpu = false\nmethod = \"random-real\"\n\
             [eval]\nnets = [\"convnet3\"]\nseeds = [0]\nsize = 32\nepochs = 2\nlr = 0.01\n[assets]\ndata = \"{}\"\n",
            s.spec.display(),
            s.root.display()
        ),
    )
    .unwrap();
    let r = ims3()
        .arg("reproduce")
        .arg(&random)
        .args(["--run-dir".as_ref(), s._dir.path().join("runs-random").as_os_str(), "--results".as_ref(), s._dir.path().join("results/tiny-random").as_os_str()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // And the full-data bound (the whole training split) for HLR and LRS.
    let full = s._dir.path().join("tiny-full.toml");
    std::fs::write(&full, std::fs::read_to_string(&random).unwrap().replace("tiny-random", "tiny-full").replace("random-real", "full-real")).unwrap();
    let r = ims3()
        .arg("reproduce")
        .arg(&full)
        .args(["--run-dir".as_ref(), s._dir.path().join("runs-full").as_os_str(), "--results".as_ref(), s._dir.path().join("results/tiny-full").as_os_str()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for wnid in std::fs::read_dir(s._dir.path().join("runs-random/random")).unwrap().flatten() {
        assert_eq!(std::fs::read_dir(wnid.path()).unwrap().count(), 2, "{:?}", wnid.path());
    }
    let r = reproduce(&[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let md = std::fs::read_to_string(results.join("results.md")).unwrap();
    assert!(md.contains("| ConvNet-3 |") && md.contains("| 12.5 |"), "{md}");
    // Its figures and page: accuracy per network, the distilled set with class names, the
    // fine-tuning losses, the S3 objective, all inline in report.html.
    let fig = |n: &str| std::fs::read_to_string(results.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    assert!(fig("accuracy.svg").contains("\nConvNet-3\n</text>"));
    assert!(fig("contact-sheet.svg").contains(">a</text>") && fig("contact-sheet.svg").contains(">b</text>"));
    assert!(fig("finetune-losses.svg").contains("\nIM term\n</text>") && fig("s3-objective.svg").contains("\nS3\n</text>"));
    assert_eq!(fig("report.html").matches("<svg").count(), 4);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("results.json")).unwrap()).unwrap();
    assert_eq!(summary["results"][0]["paper"], 12.5);
    // DD-Ranking's scores, paired with the baselines' seed 0 (one seed: std 0).
    let scores = &summary["results"][0]["scores"];
    let own = summary["results"][0]["final_top1"][0].as_f64().unwrap();
    let seed0 = |recipe: &str| -> f64 {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s._dir.path().join(format!("results/{recipe}/convnet3/eval.json"))).unwrap()).unwrap();
        v["seeds"][0]["final_top1"].as_f64().unwrap()
    };
    let (ior, hlr) = (own - seed0("tiny-random"), seed0("tiny-full") - own);
    assert!((scores["ior"][0].as_f64().unwrap() - ior).abs() < 1e-9, "{summary}");
    assert!((scores["hlr"][0].as_f64().unwrap() - hlr).abs() < 1e-9, "{summary}");
    let lrs = ims3_eval::ranking::lrs(ior / 100.0, hlr / 100.0, 0.5);
    assert!((scores["lrs"][0].as_f64().unwrap() - lrs).abs() < 1e-12, "{summary}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap()).unwrap();
    let stages: Vec<&str> = manifest["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, vec!["finetune", "sample", "select", "eval-convnet3"]);
    assert!(manifest["inputs"]["data"]["splits"][0]["sha256"].is_string());
    // Rerun: everything is skipped.
    let r = reproduce(&[]);
    assert!(r.status.success());
    assert_eq!(String::from_utf8_lossy(&r.stderr).matches("done before, skipped").count(), 4);
    // --from eval reruns only the evaluation.
    let r = reproduce(&["--from", "eval"]);
    assert!(r.status.success());
    assert_eq!(String::from_utf8_lossy(&r.stderr).matches("done before, skipped").count(), 3);

    // Errors: unknown recipe, unknown key, GPU recipe on the CPU.
    let one_line = |r: std::process::Output, want: &str| {
        assert_eq!(r.status.code(), Some(1), "{want}");
        let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
        assert!(err.starts_with("ims3: error:") && !err.contains('\n') && err.contains(want), "{want}: {err}");
    };
    one_line(ims3().args(["reproduce", "imagefruit-ipc10"]).output().unwrap(), "unknown recipe 'imagefruit-ipc10'");
    let bad = s._dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\ndataset = \"imagewoof\"\nipc = 10\nlearning_rate = 1\n").unwrap();
    one_line(ims3().arg("reproduce").arg(&bad).output().unwrap(), "unknown field `learning_rate`");
    one_line(ims3().args(["reproduce", "imagewoof-ipc10"]).output().unwrap(), "needs a GPU");
}
