//! S3 selection at ImageNet scale: 1000 classes x G = 10 subgroups x D = 512 (target < 5 s on
//! one core). `cargo bench -p ims3-s3`.

use criterion::{Criterion, criterion_group, criterion_main};
use ims3_s3::{Centroids, Params, centroid};
use rand::{Rng, SeedableRng};

fn random_centroids(classes: usize, groups: usize, dim: usize, seed: u64) -> Centroids {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut unit = |base: Option<&[f64]>| {
        let v: Vec<f64> = (0..dim)
            .map(|k| base.map_or(0.0, |b| b[k]) + rng.random::<f64>() - 0.5)
            .collect();
        centroid(&[v])
    };
    let real: Vec<Vec<f64>> = (0..classes).map(|_| unit(None)).collect();
    let candidates = real
        .iter()
        .map(|r| (0..groups).flat_map(|_| unit(Some(r))).collect())
        .collect();
    Centroids { dim, candidates, real }
}

fn bench(c: &mut Criterion) {
    let cs = random_centroids(1000, 10, 512, 0);
    let p = Params::run_sh();
    let mut group = c.benchmark_group("s3");
    group.sample_size(10);
    group.bench_function("select_1000x10x512", |b| b.iter(|| cs.select(&p).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
