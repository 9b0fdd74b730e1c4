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
