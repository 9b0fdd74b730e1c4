//! The few helpers every layer of ims3 shares, kept in one place so that no model or method
//! crate has to depend on another only for them:
//!
//! - [`atomic_write`] / [`write_json`]: a file is either its old self or its new self, never a
//!   truncated mix (temporary sibling + rename);
//! - [`progress_bar`]: the one progress-bar style of every long loop (indicatif);
//! - [`error_chain`]: an error and its sources on one line, as the command line prints them;
//! - [`autodiff_guard`]: one training step's graph at a time per process (a burn 0.22.1 race);
//! - [`choice!`]: a closed set of named choices (`--sampler ddpm`) read and written by name,
//!   with one error ([`UnknownChoice`]) that names the bad value and the accepted ones.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

/// Makes glibc's `malloc` keep freed memory for reuse instead of handing it back to the kernel:
/// blocks up to 32 MiB (glibc's largest setting) come from the heap instead of their own `mmap`,
/// and the heap's top is not trimmed below 2 GiB. The CPU backend allocates and frees every
/// intermediate tensor of every step; with glibc's defaults each large one was a fresh mapping,
/// zero-filled page by page on first touch, and a ConvNet-3 training step spent about a third of
/// its time in page faults (0.46 s per step against 0.30 s with this; `benches/NOTES-cpu.md`).
/// The cost is that a process keeps its peak heap until it exits. Called first thing by the
/// binaries; elsewhere (other C libraries, other systems) it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, creating the parent
/// folder: an interrupted write never leaves a truncated file at `path`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The bytes of a safetensors file with its JSON header's keys sorted. The `safetensors` crate
/// writes the `__metadata__` map from a `HashMap`, whose order changes from run to run, so two
/// runs writing equal tensors and metadata gave files that differ in their first bytes; after
/// this, equal contents give equal bytes. The header is padded with spaces to a multiple of 8
/// bytes, as the crate does; tensor offsets are relative to the data, so they stay valid.
pub fn sorted_safetensors_header(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::collections::BTreeMap;
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a safetensors buffer: {why}"));
    let n = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize).ok_or_else(|| bad("shorter than 8 bytes"))?;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| bad("header runs past the end"))?;
    let mut map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    if let Some(meta) = map.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(meta.take()).map_err(|e| bad(&e.to_string()))?;
        *meta = serde_json::to_value(sorted).map_err(|e| bad(&e.to_string()))?;
    }
    let mut text = serde_json::to_vec(&map).map_err(|e| bad(&e.to_string()))?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// `value` as pretty JSON, written with [`atomic_write`].
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    atomic_write(path, json.as_bytes())
}

/// A progress bar with rate and ETA, labelled `what`; hidden when `show` is false.
pub fn progress_bar(len: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// `error: source: source of source ...` on one line (what `{:#}` of an `anyhow::Error` prints).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Holds a process-wide lock for one training step: from the first tracked operation of the
/// forward pass through `backward()` and the optimiser update.
///
/// burn 0.22.1's autodiff can silently drop a gradient when `backward()` on one thread reclaims
/// graph nodes that another thread is still registering (tracel-ai/burn#5573, fixed upstream
/// by #5647 after 0.22.1). ims3 never trains on two threads of one process (its parallel stages
/// are child processes), but tests run on parallel threads and a library user may too: every
/// training step in ims3 takes this guard, so their gradients stay whole. Uncontended, it costs
/// one atomic operation per step.
pub fn autodiff_guard() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One of `count` workers sharing a list of independent work items (`--shard index/count`):
/// item `k` belongs to worker `k % count`. Every item draws from its own random stream, so the
/// union of the shards' outputs is the single worker's, bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list in one worker.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether work item `item` is this worker's.
    pub fn owns(&self, item: usize) -> bool {
        item % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a shard: expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl serde::Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A value that is none of a choice's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChoice {
    /// What is chosen (`sampler`, `norm`, ...).
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} '{}': expected {}", self.what, self.value, self.expected.join(", "))
    }
}

impl std::error::Error for UnknownChoice {}

/// `FromStr` and `Display` for an enum of named choices: `choice!(Sampler, "sampler", {
/// Sampler::Ddpm => "ddpm", Sampler::Ddim => "ddim" })`. The names are the command line's and
/// the files'.
#[macro_export]
macro_rules! choice {
    ($ty:ty, $what:literal, { $($variant:path => $name:literal),+ $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::UnknownChoice;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($variant),)+
                    _ => Err($crate::UnknownChoice { what: $what, value: s.to_string(), expected: &[$($name),+] }),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($variant => $name,)+
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.json");
        write_json(&p, &serde_json::json!({"x": 1})).unwrap();
        atomic_write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    }

    #[test]
    fn safetensors_files_with_equal_contents_have_equal_bytes() {
        // Sixteen metadata keys: two HashMaps (each with its own random hasher) iterate them in the
        // same order with a probability far below one in a million, so the raw files differ.
        let file = || {
            let meta: std::collections::HashMap<String, String> = (0..16).map(|i| (format!("key{i}"), format!("value{i}"))).collect();
            let (a, b) = (vec![1u8, 2, 3, 4], vec![5u8; 16]);
            let views = vec![
                ("b".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &a).unwrap()),
                ("a".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2], &b).unwrap()),
            ];
            safetensors::serialize(views, Some(meta)).unwrap()
        };
        let (x, y) = (sorted_safetensors_header(&file()).unwrap(), sorted_safetensors_header(&file()).unwrap());
        assert_eq!(x, y);
        assert_eq!(u64::from_le_bytes(x[..8].try_into().unwrap()) % 8, 0, "header padded to 8 bytes");
        let st = safetensors::SafeTensors::deserialize(&x).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &[1, 2, 3, 4]);
        assert_eq!(st.tensor("a").unwrap().data(), &[5u8; 16][..]);
        let (_, header) = safetensors::SafeTensors::read_metadata(&x).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap().get("key7").map(String::as_str), Some("value7"));
        assert_eq!(header.metadata().as_ref().unwrap().len(), 16);
        assert!(sorted_safetensors_header(&x[..6]).is_err());
    }

    #[derive(Debug, PartialEq)]
    enum Pick {
        A,
        B,
    }
    choice!(Pick, "pick", { Pick::A => "a", Pick::B => "bee" });

    #[test]
    fn shards_split_a_list_without_overlap() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!((s.to_string(), (0..7).filter(|&k| s.owns(k)).collect::<Vec<_>>()), ("1/3".to_string(), vec![1, 4]));
        let all: Vec<usize> = (0..3).flat_map(|i| (0..10).filter(move |&k| Shard { index: i, count: 3 }.owns(k))).collect();
        assert_eq!(all.len(), 10);
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn choices_read_and_write_their_names() {
        assert_eq!("bee".parse::<Pick>(), Ok(Pick::B));
        assert_eq!(Pick::A.to_string(), "a");
        assert_eq!("c".parse::<Pick>().unwrap_err().to_string(), "unknown pick 'c': expected a, bee");
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "data.bin: cannot read")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));
        assert_eq!(error_chain(&e), "data.bin: cannot read: no such file");
    }
}
