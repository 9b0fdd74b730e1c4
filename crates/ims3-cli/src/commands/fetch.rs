//! `ims3 fetch`: the official assets into the cache, checksums checked (`ims3_fetch`).

use std::path::PathBuf;

use anyhow::{Result, ensure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Asset names (see the list), or `all`.
    pub names: Vec<String>,
    /// Cache directory (default: $IMS3_CACHE, else ~/.cache/ims3).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let cache = a.cache.unwrap_or_else(ims3_fetch::default_cache);
    if a.names.is_empty() {
        println!("cache: {}", cache.display());
        for asset in ims3_fetch::assets() {
            let have = if cache.join(&asset.file).is_file() { "present" } else { "absent" };
            let check = if asset.sha256.is_some() {
                "sha256"
            } else if asset.md5.is_some() {
                "md5"
            } else if asset.sha256_prefix.is_some() {
                "sha256 prefix"
            } else {
                "recorded at first download"
            };
            println!("{:<28} {:<8} {} ({check})", asset.name, have, asset.url);
        }
        return Ok(());
    }
    let wanted: Vec<ims3_fetch::Asset> =
        if a.names.iter().any(|n| n == "all") { ims3_fetch::assets() } else { a.names.iter().map(|n| ims3_fetch::asset(n)).collect::<Result<_, _>>()? };
    let mut failed = Vec::new();
    for asset in &wanted {
        match ims3_fetch::fetch(asset, &cache, true) {
            Ok((path, outcome)) => {
                let what = match outcome {
                    ims3_fetch::Outcome::AlreadyThere => "present, checksum ok".to_string(),
                    ims3_fetch::Outcome::Downloaded { resumed_from: 0 } => "downloaded, checksum ok".to_string(),
                    ims3_fetch::Outcome::Downloaded { resumed_from } => format!("resumed at byte {resumed_from}, checksum ok"),
                };
                println!("{}: {what}: {}", asset.name, path.display());
                if asset.file.ends_with(".tgz") {
                    let dir = ims3_fetch::extract_tgz(&path, &cache)?;
                    println!("{}: unpacked under {}", asset.name, dir.display());
                }
            }
            Err(e) => {
                eprintln!("ims3: {}: {:#}", asset.name, anyhow::Error::from(e));
                failed.push(asset.name.clone());
            }
        }
    }
    ensure!(failed.is_empty(), "{} of {} assets not fetched: {}", failed.len(), wanted.len(), failed.join(", "));
    Ok(())
}
