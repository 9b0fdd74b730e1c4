//! The `ims3` binary end to end: output a user reads, and one-line errors with non-zero exit.

use std::path::PathBuf;
use std::process::Command;

fn ims3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ims3"))
}

fn dit_case() -> PathBuf {
    ims3_fixtures::case_of_kind("dit").dir
}

#[test]
fn info_reports_config_and_absent_gammas() {
    let case = dit_case();
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("fixture.json")).unwrap()).unwrap();
    let heads = fixture["num_heads"].to_string();
    let out = ims3().args(["info", "--json", "--heads", &heads]).arg(case.join("weights_nogamma.pt")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["hidden_size"], fixture["hidden_size"]);
    assert_eq!(v["config"]["depth"], fixture["depth"]);
    assert_eq!(v["config"]["num_classes"], fixture["num_classes"]);
    assert_eq!(v["gammas_defaulted_to_1"], 4 * fixture["gamma_blocks"].as_u64().unwrap());
    assert_eq!(v["missing"].as_array().unwrap().len(), 0);
    assert_eq!(v["unused"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_files_give_one_line_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"definitely not a checkpoint").unwrap();
    for path in [junk, dir.path().join("missing.pt")] {
        let out = ims3().arg("info").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("ims3: error:") && err.contains(path.file_name().unwrap().to_str().unwrap()), "{err}");
    }
}

#[test]
fn unavailable_backend_is_one_line() {
    let case = dit_case();
    let out = ims3().args(["--device", "cuda:0", "drift"]).arg(case.join("weights.pt")).output().unwrap();
    if cfg!(feature = "cuda") {
        return; // a CUDA build on a GPU machine may well succeed
    }
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn convert_then_info_round_trips_the_config() {
    let case = dit_case();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("model.safetensors");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("fixture.json")).unwrap()).unwrap();
    // The fixture's width is not a standard DiT size, so the head count is given.
    let heads = fixture["num_heads"].to_string();
    let status = ims3().args(["convert", "--heads", &heads]).arg(case.join("weights.pt")).arg(&out_path).status().unwrap();
    assert!(status.success());
    let out = ims3().args(["info", "--json"]).arg(&out_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["num_heads"], fixture["num_heads"]);
    assert_eq!(v["format"], "Safetensors");
}

/// The global `--config` file supplies a subcommand's options; the command line wins; a table
/// that is not a subcommand is refused.
#[test]
fn config_file_gives_defaults_for_any_subcommand() {
    let case = dit_case();
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("fixture.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ims3.toml");
    std::fs::write(&cfg, format!("[info]\nheads = {}\njson = true\n", fixture["num_heads"])).unwrap();
    let out = ims3().arg("--config").arg(&cfg).arg("info").arg(case.join("weights.pt")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["num_heads"], fixture["num_heads"]);
    std::fs::write(&cfg, "[infos]\nheads = 2\n").unwrap();
    let out = ims3().arg("--config").arg(&cfg).arg("info").arg(case.join("weights.pt")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("table [infos] is not a subcommand"));
    // `distill` is the S3 stage's other name.
    assert!(ims3().args(["distill", "--help"]).output().unwrap().status.success());
}

/// `ims3 info` on a dataset folder: the layout found and the files per class.
#[test]
fn info_describes_a_dataset_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("one.toml");
    std::fs::write(&spec, "name = \"one\"\nclasses = [{ wnid = \"n01\", imagenet = 3, name = \"a\" }]\n").unwrap();
    let d = dir.path().join("root/train/n01");
    std::fs::create_dir_all(&d).unwrap();
    image::RgbImage::new(4, 4).save(d.join("0.png")).unwrap();
    let out = ims3().arg("info").arg(dir.path().join("root")).arg("--dataset").arg(&spec).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subset cut from ImageNet") && text.contains("train:    1 files") && text.contains("n01"), "{text}");
}

/// `ims3 pretrain` on a tiny IDX set: trains from scratch, resumes, writes a loadable model.
#[test]
fn pretrain_from_idx_writes_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let (n, side) = (16usize, 8usize);
    let mut images = vec![0u8, 0, 8, 3, 0, 0, 0, n as u8, 0, 0, 0, side as u8, 0, 0, 0, side as u8];
    images.extend((0..n * side * side).map(|i| ((i * 37) % 251) as u8));
    let mut labels = vec![0u8, 0, 8, 1, 0, 0, 0, n as u8];
    labels.extend((0..n).map(|i| (i % 3) as u8));
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels).unwrap();
    let out = dir.path().join("run");
    let run = |steps: &str| {
        ims3()
            .args(["pretrain", "--hidden", "32", "--depth", "1", "--heads", "2", "--batch", "4", "--checkpoint-every", "1", "--steps", steps])
            .arg("--idx")
            .arg(dir.path())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let r = run("2");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run("3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("3 of 3 steps"));
    let info = ims3().args(["info", "--json", "--heads", "2"]).arg(out.join("model.safetensors")).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((v["config"]["in_channels"].as_u64(), v["config"]["num_classes"].as_u64(), v["config"]["input_size"].as_u64()), (Some(1), Some(3), Some(8)));

    // A second stage from those weights (`--init`): at a vanishing learning rate one step leaves
    // them in place, so the new model equals its start, not a fresh seeded one.
    let first = out.join("model.safetensors");
    let stage = |out: &std::path::Path, init: Option<&std::path::Path>, hidden: &str| {
        let mut c = ims3();
        c.args(["pretrain", "--depth", "1", "--heads", "2", "--batch", "4", "--steps", "1", "--lr", "1e-12", "--seed", "7", "--hidden", hidden]).arg("--idx").arg(dir.path()).arg("--out").arg(out);
        if let Some(p) = init {
            c.arg("--init").arg(p);
        }
        c.output().unwrap()
    };
    let out2 = dir.path().join("stage2");
    let r = stage(&out2, Some(&first), "32");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let tensor = |path: &std::path::Path, key: &str| -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(key).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    for key in ["x_embedder.proj.weight", "blocks.0.attn.qkv.weight", "final_layer.linear.weight"] {
        let (a, b) = (tensor(&first, key), tensor(&out2.join("model.safetensors"), key));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "{key}: stage 2 moved {worst} from its --init weights");
    }
    // The folder remembers its start: a rerun without --init, or from other weights, is refused.
    let r = stage(&out2, None, "32");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("init.json"), "{}", String::from_utf8_lossy(&r.stderr));
    let r = stage(&out2, Some(&out2.join("model.safetensors")), "32");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("SHA-256"), "{}", String::from_utf8_lossy(&r.stderr));
    // A folder that started from the seeded initialisation does not take --init later.
    let r = stage(&out, Some(&first), "32");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("without --init"), "{}", String::from_utf8_lossy(&r.stderr));
    // Weights of another shape are refused, naming the file.
    let r = stage(&dir.path().join("stage3"), Some(&first), "64");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("model.safetensors"), "{err}");
}
