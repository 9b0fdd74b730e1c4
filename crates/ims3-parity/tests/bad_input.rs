//! Loading real-format DiT checkpoints (the fixtures' `weights.pt`) the ways users get them
//! wrong, and the nested training-checkpoint layout.

use burn::prelude::*;
use ims3_dit::{DiTConfig, load_dit};
use ims3_parity::{Case, discover, fixtures_dir};
use std::io::{Read, Write};
use std::path::Path;

fn dit_cases() -> Vec<Case> {
    let cases: Vec<Case> = discover(&fixtures_dir()).unwrap().into_iter().filter(|c| c.kind == "dit").collect();
    assert!(!cases.is_empty(), "no dit fixture under {}", fixtures_dir().display());
    cases
}

fn config_of(case: &Case) -> DiTConfig {
    DiTConfig {
        input_size: case.usize("input_size").unwrap(),
        patch_size: case.usize("patch_size").unwrap(),
        in_channels: case.usize("in_channels").unwrap(),
        hidden_size: case.usize("hidden_size").unwrap(),
        depth: case.usize("depth").unwrap(),
        num_heads: case.usize("num_heads").unwrap(),
        mlp_ratio: 4.0,
        class_dropout_prob: case.f64("class_dropout_prob").unwrap(),
        num_classes: case.usize("num_classes").unwrap(),
        learn_sigma: true,
        gamma_blocks: case.usize("gamma_blocks").unwrap(),
    }
}

#[test]
fn truncated_checkpoint_is_an_error_naming_the_file() {
    let case = &dit_cases()[0];
    let bytes = std::fs::read(case.dir.join("weights.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_dit(&cut, Some(&config_of(case)), None, &Device::flex()).expect_err("truncated file must fail").to_string();
    assert!(e.contains("cut.pt"), "{e}");
}

#[test]
fn weights_of_another_size_are_refused_with_the_first_mismatches() {
    let case = &dit_cases()[0];
    let cfg = config_of(case);
    // A wider model of the same depth: every weight mismatches, as XL weights in an L config.
    let wider = DiTConfig { hidden_size: cfg.hidden_size * 2, ..cfg.clone() };
    let e = load_dit(case.dir.join("weights.pt"), Some(&wider), None, &Device::flex())
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("weights.pt") && e.contains("shape mismatch") && e.contains("expected"), "{e}");
}

#[test]
fn inferred_config_equals_the_fixture_config() {
    for case in dit_cases() {
        let ckpt = ims3_weights::Checkpoint::open(case.dir.join("weights.pt"), None).unwrap();
        let inferred = ims3_dit::infer_config(&ckpt, Some(case.usize("num_heads").unwrap())).unwrap();
        assert_eq!(inferred, config_of(&case), "{}", case.name);
    }
}

/// Rewrites a `torch.save(state_dict)` zip as `torch.save({"ema": state_dict, "steps": 8000})`.
fn nest_as_training_checkpoint(src: &Path, dst: &Path) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if name.ends_with("data.pkl") {
            assert_eq!(&data[..2], b"\x80\x02");
            assert_eq!(*data.last().unwrap(), b'.');
            let body = &data[2..data.len() - 1];
            let mut p = b"\x80\x02}".to_vec(); // PROTO 2, EMPTY_DICT
            p.push(b'X');
            p.extend_from_slice(&3u32.to_le_bytes());
            p.extend_from_slice(b"ema");
            p.extend_from_slice(body);
            p.push(b's'); // SETITEM
            p.push(b'X');
            p.extend_from_slice(&5u32.to_le_bytes());
            p.extend_from_slice(b"steps");
            p.push(b'J'); // BININT
            p.extend_from_slice(&8000i32.to_le_bytes());
            p.extend_from_slice(b"s.");
            data = p;
        }
        zout.start_file(name, opts).unwrap();
        zout.write_all(&data).unwrap();
    }
    zout.finish().unwrap();
}

#[test]
fn nested_training_checkpoint_loads_the_ema_weights() {
    let case = &dit_cases()[0];
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("0008000.pt");
    nest_as_training_checkpoint(&case.dir.join("weights.pt"), &nested);
    let device = Device::flex();
    let cfg = config_of(case);
    let (plain, _) = load_dit(case.dir.join("weights.pt"), Some(&cfg), None, &device).unwrap();
    let (ema, report) = load_dit(&nested, Some(&cfg), None, &device).unwrap();
    assert_eq!(report.nested_key.as_deref(), Some("ema"));
    let io = case.io().unwrap();
    let (x, t, y) = (io["x"].tensor::<4>(&device), io["t"].tensor::<1>(&device), io["y"].int_tensor(&device));
    let a = ims3_parity::to_f64(plain.forward(x.clone(), t.clone(), y.clone()));
    let b = ims3_parity::to_f64(ema.forward(x, t, y));
    assert_eq!(a, b);
}
