//! `ims3 select` end to end on a tiny generated dataset, with the fixtures' torchvision
//! ResNet-18 (random weights in the real `.pth` layout) as the encoder.

use std::path::{Path, PathBuf};
use std::process::Command;

fn resnet18_weights() -> PathBuf {
    ims3_fixtures::case_of_kind("resnet18_torchvision").dir.join("weights.pth")
}

/// A smooth colour pattern per (class, index), in [-1, 1].
fn pattern(class: usize, k: usize, size: usize) -> ims3_images::Rgb {
    let data = (0..3)
        .flat_map(|c| {
            (0..size * size).map(move |i| {
                let (y, x) = ((i / size) as f32, (i % size) as f32);
                ((x * (0.2 + 0.1 * class as f32) + y * 0.05 * (k + 1) as f32 + c as f32).sin()) * 0.9
            })
        })
        .collect();
    ims3_images::Rgb::new(size, size, data)
}

fn make_dataset(root: &Path, classes: &[&str], groups: usize, ipc: usize) {
    for (ci, class) in classes.iter().enumerate() {
        for k in 0..3 {
            ims3_images::write_png(&root.join("real").join(class).join(format!("{k}.png")), &pattern(ci, k, 40).map(|v| (v + 1.0) / 2.0)).unwrap();
        }
        let imgs: Vec<_> = (0..groups * ipc).map(|k| pattern(ci, 10 + k, 32)).collect();
        ims3_s3::pipeline::write_candidates(&root.join("cand"), class, &imgs).unwrap();
    }
}

#[test]
fn select_writes_the_distilled_folder_and_reselects_from_centroids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let classes = ["n001", "n002"];
    make_dataset(root, &classes, 2, 2);
    let out = root.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_ims3"))
        .args(["select", "--groups", "2", "--ipc", "2", "--real-max", "2"])
        .arg("--encoder").arg(resnet18_weights())
        .arg("--real").arg(root.join("real"))
        .arg("--candidates").arg(root.join("cand"))
        .arg("--out").arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for class in classes {
        for k in 0..2 {
            assert!(out.join(format!("final_distilled/train/{class}/{k:04}.png")).is_file());
        }
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("selection.json")).unwrap()).unwrap();
    assert_eq!(report["selected"].as_array().unwrap().len(), 2);
    assert_eq!(report["real_images_used"], serde_json::json!([2, 2]));
    assert!(report["objective"].as_f64().unwrap().is_finite());
    // The objective per sweep: it starts at the closest subgroups and ends at the choice.
    let trace = report["trace"].as_array().unwrap();
    assert!(trace.len() >= 2 && trace.last().unwrap() == &report["objective"], "{report}");
    let objective = std::fs::read_to_string(out.join("objective.svg")).unwrap();
    assert!(objective.contains("\nobjective\n</text>") && objective.contains("\nS3\n</text>"), "objective.svg");

    // Re-selection from the saved centroids, no encoder needed, other weights.
    let out2 = root.join("out2");
    let run = Command::new(env!("CARGO_BIN_EXE_ims3"))
        .args(["select", "--groups", "2", "--ipc", "2", "--alpha", "1", "--beta", "0"])
        .arg("--centroids").arg(out.join("centroids.safetensors"))
        .arg("--candidates").arg(root.join("cand"))
        .arg("--out").arg(&out2)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(out2.join("selection.json")).unwrap()).unwrap();
    // With beta = 0 the choice is the closest-to-real subgroup of each class.
    let d: Vec<f64> = again["dist_to_real"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(d.iter().all(|v| *v >= 0.0));
}

#[test]
fn empty_real_class_and_short_candidates_name_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_dataset(root, &["n001", "n002"], 2, 2);
    std::fs::remove_dir_all(root.join("real/n002")).unwrap();
    std::fs::create_dir_all(root.join("real/n002")).unwrap();
    let base = |groups: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ims3"));
        c.args(["select", "--groups", groups, "--ipc", "2"])
            .arg("--encoder").arg(resnet18_weights())
            .arg("--real").arg(root.join("real"))
            .arg("--candidates").arg(root.join("cand"))
            .arg("--out").arg(root.join("out"));
        c
    };
    let run = base("2").output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("n002") && err.contains("holds no image"), "{err}");
    let run = base("3").output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("n001") && err.contains("fewer than 3 groups x 2"), "{err}");
}
