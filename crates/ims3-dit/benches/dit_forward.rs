//! DiT forward on the Flex CPU backend, small shapes: `cargo bench -p ims3-dit`.

use burn::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ims3_dit::DiTConfig;

/// A DiT-S-like model on 16x16 latents (64 tokens), 4 blocks, batch 4.
pub fn small_config() -> DiTConfig {
    DiTConfig {
        input_size: 16,
        patch_size: 2,
        in_channels: 4,
        hidden_size: 384,
        depth: 4,
        num_heads: 6,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: 10,
        learn_sigma: true,
        gamma_blocks: 4,
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let cfg = small_config();
    let model = cfg.init(&device);
    let x = Tensor::<4>::random([4, 4, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<1>::from_floats([1.0, 250.0, 500.0, 999.0], &device);
    let y = Tensor::<1, Int>::from_ints([0, 1, 2, 3], &device);
    let mut group = c.benchmark_group("dit");
    group.sample_size(20);
    group.bench_function("forward_s_depth4_16px_b4_flex", |b| {
        b.iter(|| {
            let out = model.forward(x.clone(), t.clone(), y.clone());
            out.into_data()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
