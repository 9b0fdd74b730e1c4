//! S3 at ImageNet-1K scale: the selection over 1000 classes x G = 10 subgroups of D = 512
//! (ResNet-18) centroids, timed, with the process's peak memory, written as JSON.
//! The subgroups' size (IPC 10 or 50) changes only the encoding, not these shapes.
//!
//! `cargo run --profile dev -p ims3-s3 --example s3_scale -- results/bench/s3-imagenet1k.json`

use std::time::Instant;

use ims3_s3::{Centroids, Params, centroid};
use rand::{Rng, SeedableRng};

fn random_centroids(classes: usize, groups: usize, dim: usize, seed: u64) -> Centroids {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut unit = |base: Option<&[f64]>| {
        let v: Vec<f64> = (0..dim).map(|k| base.map_or(0.0, |b| b[k]) + rng.random::<f64>() - 0.5).collect();
        centroid(&[v])
    };
    let real: Vec<Vec<f64>> = (0..classes).map(|_| unit(None)).collect();
    let candidates = real.iter().map(|r| (0..groups).flat_map(|_| unit(Some(r))).collect()).collect();
    Centroids { dim, candidates, real }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "results/bench/s3-imagenet1k.json".into());
    let (classes, groups, dim) = (1000, 10, 512);
    let before = peak_mib();
    let cs = random_centroids(classes, groups, dim, 0);
    let p = Params::run_sh();
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let s = cs.select(&p).expect("selects");
        runs.push(t.elapsed().as_secs_f64());
        last = Some(s);
    }
    let s = last.expect("ran");
    runs.sort_by(f64::total_cmp);
    let record = serde_json::json!({
        "workload": "S3 selection (reference objective, run.sh alpha 0.4 beta 0.9, at most 5 sweeps)",
        "classes": classes, "groups": groups, "dim": dim,
        "seconds_median_of_3": runs[1], "seconds": runs,
        "sweeps": s.sweeps,
        "peak_rss_mib": peak_mib(), "rss_before_centroids_mib": before,
        "centroid_bytes": classes * (groups + 1) * dim * 8,
        "threads": 1,
        "command": "cargo run --profile dev -p ims3-s3 --example s3_scale",
        "machine": "2-core development machine (Xeon, AVX-512)",
    });
    ims3_util::write_json(std::path::Path::new(&out), &record).expect("write");
    println!("{}", serde_json::to_string_pretty(&record).expect("json"));
}
