//! `ims3 fetch`: the official assets (datasets/assets.toml) into a cache directory.
//!
//! A download goes to `<file>.part`; an interrupted one resumes with an HTTP `Range` request
//! (a server that answers 200 instead of 206 restarts it). The finished file is checked against
//! the checksum its publisher pins (SHA-256, an MD5 where only that is published, or torchvision's
//! SHA-256 prefix in the file name) before it is renamed into place; a mismatch deletes the part
//! file and names both digests. Assets without a pinned checksum are recorded on first download
//! (`<file>.sha256`) and checked against that record afterwards. A machine that cannot reach the
//! address gets one message naming the file, the address and where to put it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::Md5;
use serde::Deserialize;
use sha2::{Digest, Sha256};

const REGISTRY: &str = include_str!("../../../datasets/assets.toml");

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub name: String,
    /// Path under the cache directory.
    pub file: String,
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub sha256_prefix: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
}

#[derive(Deserialize)]
struct Registry {
    asset: Vec<Asset>,
}

/// Every asset of the registry.
pub fn assets() -> Vec<Asset> {
    toml::from_str::<Registry>(REGISTRY).expect("datasets/assets.toml parses").asset
}

/// An asset by name (or by file name).
pub fn asset(name: &str) -> Result<Asset, FetchError> {
    assets()
        .into_iter()
        .find(|a| a.name == name || a.file == name || a.file.rsplit('/').next() == Some(name))
        .ok_or_else(|| FetchError::Unknown(name.into(), assets().iter().map(|a| a.name.clone()).collect::<Vec<_>>().join(", ")))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown asset '{0}' (known: {1})")]
    Unknown(String, String),
    #[error("cannot download {file}: {url} is unreachable ({why}). On a machine that can reach it, download it and put it at {dest}")]
    Offline { file: String, url: String, why: String, dest: PathBuf },
    #[error("{url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{path}: truncated download: {got} of {want} bytes; run the same command again to resume")]
    Truncated { path: PathBuf, got: u64, want: u64 },
    #[error("{path}: corrupted download: {algo} {got}, expected {want}; the partial file was removed, run again to download it afresh")]
    Corrupt { path: PathBuf, algo: &'static str, got: String, want: String },
    #[error("{path}: cannot read or write")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot unpack")]
    Unpack { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// What `fetch` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    AlreadyThere,
    Downloaded { resumed_from: u64 },
}

fn digests(path: &Path) -> Result<(String, String), FetchError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let (mut s, mut m) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        s.update(&buf[..n]);
        m.update(&buf[..n]);
    }
    Ok((hex::encode(s.finalize()), hex::encode(m.finalize())))
}

/// SHA-256 of a file, hex, read in 1 MiB chunks (for manifests of inputs).
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    Ok(digests(path)?.0)
}

/// Checks `path` against the asset's pinned checksum, or its first-download record.
fn verify(asset: &Asset, path: &Path, record: &Path) -> Result<String, FetchError> {
    let (sha, md5) = digests(path)?;
    let bad = |algo, got: &str, want: &str| FetchError::Corrupt { path: path.to_path_buf(), algo, got: got.into(), want: want.into() };
    if let Some(want) = &asset.sha256 {
        if !sha.eq_ignore_ascii_case(want) {
            return Err(bad("sha256", &sha, want));
        }
    } else if let Some(want) = &asset.md5 {
        if !md5.eq_ignore_ascii_case(want) {
            return Err(bad("md5", &md5, want));
        }
    } else if let Some(prefix) = &asset.sha256_prefix {
        if !sha.starts_with(&prefix.to_ascii_lowercase()) {
            return Err(bad("sha256", &sha, &format!("{prefix}...")));
        }
    } else if let Ok(recorded) = std::fs::read_to_string(record) {
        let recorded = recorded.split_whitespace().next().unwrap_or_default().to_string();
        if recorded != sha {
            return Err(bad("sha256", &sha, &format!("{recorded} (recorded at first download)")));
        }
    }
    Ok(sha)
}

/// Downloads `asset` into `cache` unless a verified copy is there; returns its path.
pub fn fetch(asset: &Asset, cache: &Path, show_progress: bool) -> Result<(PathBuf, Outcome), FetchError> {
    let dest = cache.join(&asset.file);
    let record = PathBuf::from(format!("{}.sha256", dest.display()));
    if dest.is_file() {
        verify(asset, &dest, &record)?;
        return Ok((dest, Outcome::AlreadyThere));
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let offline = |why: String| FetchError::Offline { file: asset.file.clone(), url: asset.url.clone(), why, dest: dest.clone() };
    let agent = ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(15)).timeout_read(std::time::Duration::from_secs(60)).build();
    let mut req = agent.get(&asset.url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // The part file is already complete (or larger than the file): verify it as it is.
            return finish(asset, &part, &dest, &record, have);
        }
        Err(ureq::Error::Status(code, _)) => return Err(FetchError::Http { url: asset.url.clone(), status: code }),
        Err(e) => return Err(offline(e.to_string())),
    };
    let resumed = resp.status() == 206 && have > 0;
    let start = if resumed { have } else { 0 };
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let total = length.map(|l| l + start);
    let mut file = if resumed {
        std::fs::OpenOptions::new().append(true).open(&part).map_err(io(&part))?
    } else {
        std::fs::File::create(&part).map_err(io(&part))?
    };
    let pb = if show_progress {
        let pb = indicatif::ProgressBar::new(total.unwrap_or(0));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        pb.set_message(asset.file.clone());
        pb.set_position(start);
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = start;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(_) => break, // connection dropped: what arrived stays in the part file
        };
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io(&part))?;
        got += n as u64;
        pb.set_position(got);
    }
    file.sync_all().map_err(io(&part))?;
    pb.finish_and_clear();
    if let Some(want) = total {
        if got < want {
            return Err(FetchError::Truncated { path: part, got, want });
        }
    }
    let (p, _) = finish(asset, &part, &dest, &record, got)?;
    Ok((p, Outcome::Downloaded { resumed_from: start }))
}

fn finish(asset: &Asset, part: &Path, dest: &Path, record: &Path, _len: u64) -> Result<(PathBuf, Outcome), FetchError> {
    match verify(asset, part, record) {
        Ok(sha) => {
            if asset.sha256.is_none() && asset.md5.is_none() && !record.is_file() {
                std::fs::write(record, format!("{sha}  {}\n", asset.file)).map_err(io(record))?;
                tracing::warn!("{}: no checksum is pinned for this asset; recorded sha256 {sha} for later checks", asset.file);
            }
            std::fs::rename(part, dest).map_err(io(dest))?;
            Ok((dest.to_path_buf(), Outcome::Downloaded { resumed_from: 0 }))
        }
        Err(e) => {
            let _ = std::fs::remove_file(part);
            Err(e)
        }
    }
}

/// Unpacks a `.tgz` archive into `into` (once: a `<archive>.extracted` marker records it) and
/// returns `into`. The fast.ai archives unpack to `imagewoof2/{train,val}/<wnid>/`.
pub fn extract_tgz(archive: &Path, into: &Path) -> Result<PathBuf, FetchError> {
    let marker = PathBuf::from(format!("{}.extracted", archive.display()));
    if marker.is_file() {
        return Ok(into.to_path_buf());
    }
    let f = std::fs::File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    tar.unpack(into).map_err(|source| FetchError::Unpack { path: archive.to_path_buf(), source })?;
    std::fs::write(&marker, b"").map_err(io(&marker))?;
    Ok(into.to_path_buf())
}

/// The default cache: `$IMS3_CACHE`, else `$XDG_CACHE_HOME/ims3`, else `~/.cache/ims3`.
pub fn default_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("IMS3_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("ims3");
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache").join("ims3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_parses_and_names_the_official_files() {
        let all = assets();
        assert!(all.iter().any(|a| a.file == "DiT-XL-2-256x256.pt"));
        assert_eq!(asset("resnet18").unwrap().sha256_prefix.as_deref(), Some("f37072fd"));
        assert_eq!(asset("train-images-idx3-ubyte.gz").unwrap().md5.as_deref(), Some("8d4fb7e6c68d591d4c3dfef9ec88bf0d"));
        assert!(matches!(asset("imagefruit"), Err(FetchError::Unknown(..))));
        let names: std::collections::BTreeSet<_> = all.iter().map(|a| &a.name).collect();
        assert_eq!(names.len(), all.len(), "asset names are unique");
    }
}
