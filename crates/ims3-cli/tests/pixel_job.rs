//! The small-image job end to end on a generated IDX dataset: `ims3 pretrain`, `ims3
//! train-encoder`, then `ims3 reproduce` with a `pixel-ablation` recipe (IM fine-tuning, sampling
//! from both models, S3 twice, five evaluations, report), a rerun that skips every stage, and the
//! errors a user meets first.

use std::path::Path;
use std::process::Command;

fn ims3() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ims3"))
}

fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut b = vec![0u8, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

/// 28x28 images: class c is a bright vertical bar at column 2c + 4 over a little noise.
fn make_split(dir: &Path, prefix: &str, per_class: usize, salt: u32) {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..per_class * 10 {
        let c = i % 10;
        for y in 0..28u32 {
            for x in 0..28u32 {
                let noise = ((x * 31 + y * 17 + i as u32 * 7 + salt) % 23) as u8;
                let bar = (x as usize).abs_diff(2 * c + 4) <= 1 && (4..24).contains(&y);
                pixels.push(if bar { 220 + noise } else { noise });
            }
        }
        labels.push(c as u8);
    }
    let n = labels.len() as u32;
    write_idx(&dir.join(format!("{prefix}-images-idx3-ubyte")), &[n, 28, 28], &pixels);
    write_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &[n], &labels);
}

/// `<d>/idx` with a training split of 8 images per class and a test split of 3.
fn make_idx(d: &Path) -> std::path::PathBuf {
    let idx = d.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    make_split(&idx, "train", 8, 0);
    make_split(&idx, "t10k", 3, 5);
    idx
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny `pixel-ablation` recipe over the generated data (a latent DiT's when `vae` is given).
fn recipe_text(dit: &Path, enc: &Path, idx: &Path, vae: Option<&Path>) -> String {
    let vae = vae.map(|v| format!("vae = \"{}\"\n", v.display())).unwrap_or_default();
    format!(
        "name = \"job\"\nkind = \"pixel-ablation\"\ndataset = \"fashion-mnist\"\nipc = 2\n\
         [assets]\ndit = \"{}\"\nencoder = \"{}\"\nidx = \"{}\"\n{vae}\
         [data]\nvalidation_per_class = 2\nfinetune_per_class = 3\n\
         [train]\nbatch_size = 4\nmax_steps = 2\nema_decay = 0.5\n\
         [sample]\nsteps = \"3\"\nbatch = 4\n\
         [select]\ngroups = 2\nreal_max = 5\n\
         [eval]\nnet = \"convnet3\"\nwidth = 4\nepochs = 2\nbatch = 8\nlr = 0.01\nseeds = [0, 1]\neval_every = 1\nparallel = 2\n\
         [report]\nreal_per_class = 8\nk = 2\n\
         [[literature]]\nmethod = \"DSA\"\ntop1 = \"84.6 +- 0.3\"\nsource = \"a paper, Table 1\"\n",
        dit.display(),
        enc.display(),
        idx.display()
    )
}

#[test]
fn pixel_ablation_job_runs_end_to_end_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let idx = make_idx(d);
    let dit_dir = d.join("pt");
    ok(ims3()
        .args(["pretrain", "--hidden", "32", "--depth", "2", "--heads", "2", "--patch", "4", "--steps", "3", "--batch", "8", "--idx"])
        .arg(&idx)
        .arg("--out")
        .arg(&dit_dir)
        .output()
        .unwrap());
    let enc = d.join("enc.safetensors");
    let out = ims3().args(["train-encoder", "--width", "8", "--epochs", "1", "--batch", "16", "--idx"]).arg(&idx).arg("--out").arg(&enc).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("test top-1"), "{out:?}");
    ok(out);

    let recipe = d.join("job.toml");
    let text = recipe_text(&dit_dir.join("model.safetensors"), &enc, &idx, None);
    std::fs::write(&recipe, &text).unwrap();
    let (runs, results) = (d.join("runs"), d.join("results"));
    let reproduce = |r: &Path| ims3().arg("reproduce").arg(r).arg("--run-dir").arg(&runs).arg("--results").arg(&results).output().unwrap();
    ok(reproduce(&recipe));
    let md = std::fs::read_to_string(results.join("results.md")).unwrap();
    for row in ["| random real subset |", "| plain DiT samples |", "| IM only |", "| S3 only |", "| IMS3 (IM + S3) |", "| DSA | 84.6 +- 0.3 | a paper, Table 1 |"] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
    for row in ["| IMS3 (IM + S3) - plain DiT samples |", "| IM only - random real subset |"] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
    // The held-out parts: fit, fine-tuning and validation images are disjoint and stratified
    // (the fine-tuning split and the validation folder come from fit's training split).
    let data = runs.join("data");
    let count = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(count(&data.join("validation").join("0-t-shirt-top")), 2);
    assert_eq!(std::fs::metadata(data.join("finetune/train-labels-idx1-ubyte")).unwrap().len(), 8 + 30);
    assert_eq!(std::fs::metadata(data.join("fit/train-labels-idx1-ubyte")).unwrap().len(), 8 + 60);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("results.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(json["comparisons"].as_array().unwrap().len(), 7);
    for r in rows {
        // Tested once after the last epoch: no best-on-test figure, a validation figure instead.
        assert!(r["seeds"][0]["best_top1"].is_null() && r["final_val_top1"][0].is_f64(), "{r}");
    }
    for r in rows {
        let acc = r["final_top1"][0].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{r}");
        let cov = r["measures"]["coverage"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&cov), "{r}");
    }
    // Each arm holds IPC images per class; the sheets and the plot decode.
    for arm in ["random-real", "dit", "im", "s3", "ims3"] {
        for class in ["0-t-shirt-top", "9-ankle-boot"] {
            assert_eq!(std::fs::read_dir(runs.join("arms").join(arm).join(class)).unwrap().count(), 2, "{arm}/{class}");
        }
    }
    // Every figure names what it shows: class names, methods, axes, loss terms.
    let svg = |name: &str| std::fs::read_to_string(results.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let methods = ["random real subset", "plain DiT samples", "IM only", "S3 only", "IMS3 (IM + S3)"];
    let has = |doc: &str, text: &str| doc.contains(&format!(">{text}</text>")) || doc.contains(&format!(">\n{text}\n</text>"));
    for name in ["embedding-tsne.svg", "embedding-pca.svg"] {
        let doc = svg(name);
        for t in classes.iter().chain(&methods).chain(&["real (small dots)", "distilled (squares)"]) {
            assert!(has(&doc, t), "{name}: no text {t}");
        }
    }
    let doc = svg("accuracy.svg");
    for t in methods.iter().chain(&["epoch", "validation top-1 (%), mean +- std over seeds"]) {
        assert!(has(&doc, t), "accuracy.svg: no text {t}");
    }
    for arm in ["random-real", "dit", "im", "s3", "ims3"] {
        let doc = svg(&format!("distilled-{arm}.svg"));
        assert!(classes.iter().all(|c| has(&doc, c)) && doc.contains("data:image/png;base64,"), "distilled-{arm}.svg");
    }
    let doc = svg("finetune-losses.svg");
    for t in ["total loss", "MSE (noise prediction)", "IM term", "Minimax neg (diversity)", "step"] {
        assert!(has(&doc, t), "finetune-losses.svg: no text {t}");
    }
    let doc = svg("s3-objective.svg");
    assert!(has(&doc, "S3 (pretrained DiT)") && has(&doc, "IMS3 (IM fine-tuned DiT)") && doc.contains("<polyline"), "s3-objective.svg");
    let page = svg("report.html");
    // Self-contained: tables and inline figures, nothing fetched.
    assert!(page.contains("<table>") && page.matches("<svg").count() >= 10, "report.html");
    assert!(!page.contains("src=\"http") && !page.contains("<link") && !page.contains("<script"), "report.html loads something");
    let figures: Vec<(String, Vec<u8>)> = ["embedding-tsne.svg", "accuracy.svg", "report.html"].iter().map(|n| (n.to_string(), std::fs::read(results.join(n)).unwrap())).collect();
    // The S3 rows come from the selections written by `ims3 select`.
    assert!(runs.join("ims3/selection.json").is_file() && runs.join("s3/selection.json").is_file());

    // The same job spread over two devices (here two CPU workers): every sampling, encoding and
    // evaluation stage runs as one shard per device, then completes; the results are the same.
    let (runs2, results2) = (d.join("runs-2dev"), d.join("results-2dev"));
    let stderr = ok(ims3().arg("reproduce").arg(&recipe).arg("--run-dir").arg(&runs2).arg("--results").arg(&results2).args(["--devices", "cpu,cpu"]).output().unwrap());
    assert!(stderr.contains("sample-dit@1: ims3") && stderr.contains("select-ims3@0: ims3") && stderr.contains("eval-ims3-seed1@1: ims3"), "{stderr}");
    let rows = |dir: &Path| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        v["rows"].as_array().unwrap().iter().map(|r| serde_json::json!([r["final_top1"], r["best_top1"], r["measures"], r["ior"]])).collect()
    };
    assert_eq!(rows(&results2), rows(&results));
    for f in ["ims3/selection.json", "s3/selection.json", "candidates-im/9-ankle-boot.safetensors"] {
        assert_eq!(std::fs::read(runs2.join(f)).unwrap(), std::fs::read(runs.join(f)).unwrap(), "{f}");
    }

    // `ims3 plan` for Slurm, run with a stand-in `sbatch` that executes each job (every array
    // task in turn) at submission: the arrays, the dependencies' order and the last job give
    // the same results as one run.
    let (runs3, results3) = (d.join("runs-plan"), d.join("results-plan"));
    let plan = d.join("plan.sh");
    let extra = format!("--run-dir {} --results {}", runs3.display(), results3.display());
    ok(ims3().arg("plan").arg(&recipe).args(["--shards", "2", &format!("--reproduce-args={extra}")]).arg("--ims3").arg(env!("CARGO_BIN_EXE_ims3")).arg("--out").arg(&plan).output().unwrap());
    let bin = d.join("fake-slurm");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/usr/bin/env bash\narr=''; wrap=''\nwhile [ $# -gt 0 ]; do case \"$1\" in --array=*) arr=\"${1#--array=}\";; --wrap) wrap=\"$2\"; shift;; esac; shift; done\n\
         if [ -n \"$arr\" ]; then for i in $(seq ${arr%-*} ${arr#*-}); do SLURM_ARRAY_TASK_ID=$i bash -c \"$wrap\" >&2 || exit 1; done; else bash -c \"$wrap\" >&2 || exit 1; fi\necho 42\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("bash").arg(&plan).env("PATH", path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(runs3.join("sample-im@1.done").is_file() && runs3.join("eval-dit-seed0@0.done").is_file());
    assert_eq!(rows(&results3), rows(&results));

    // A rerun skips every subprocess stage, and draws the same figures byte for byte.
    let stderr = ok(reproduce(&recipe));
    for stage in ["finetune", "sample-dit", "sample-im", "select-s3", "select-ims3", "arms-random-real", "arms-ims3", "eval-ims3-seed1"] {
        assert!(stderr.contains(&format!("{stage}: done before, skipped")), "{stage}: {stderr}");
    }
    for (name, bytes) in &figures {
        if name != "report.html" {
            assert_eq!(&std::fs::read(results.join(name)).unwrap(), bytes, "{name} changed on a rerun");
        }
    }

    // --from select redoes both selections and what follows, not the sampling.
    let out = ims3().arg("reproduce").arg(&recipe).arg("--run-dir").arg(&runs).arg("--results").arg(&results).args(["--from", "select"]).output().unwrap();
    let stderr = ok(out);
    assert!(stderr.contains("sample-im: done before, skipped") && !stderr.contains("select-ims3: done before"), "{stderr}");
    assert!(runs.join("ims3/selection.json").is_file());

    // The deterministic sampler on the same model: same shapes, and an unknown one is refused.
    let dit = dit_dir.join("model.safetensors");
    let sample = |sampler: &str, out: &Path| ims3().args(["sample", "--dataset", "fashion-mnist", "--per-class", "2", "--steps", "3", "--sampler", sampler, "--dit"]).arg(&dit).arg("--out").arg(out).output().unwrap();
    ok(sample("ddim", &d.join("ddim")));
    assert!(d.join("ddim/9-ankle-boot.safetensors").is_file() && d.join("ddim/png/9-ankle-boot/0001.png").is_file());
    // The DiT in bf16 (--dtype bf16): the same images up to bf16's rounding. The network's eps
    // is within ~1e-2 of its largest value (ims3-parity's dit-bf16 lines); three DDIM steps
    // from the same noise carry that over, a few hundredths on pixels in [-1, 1]: within 0.1.
    let bf16 = d.join("ddim-bf16");
    ok(ims3().args(["sample", "--dataset", "fashion-mnist", "--per-class", "2", "--steps", "3", "--sampler", "ddim", "--dtype", "bf16", "--dit"]).arg(&dit).arg("--out").arg(&bf16).output().unwrap());
    let (half, full) = (ims3_s3::pipeline::read_candidates(&bf16, "9-ankle-boot").unwrap(), ims3_s3::pipeline::read_candidates(&d.join("ddim"), "9-ankle-boot").unwrap());
    let diff = half.iter().zip(&full).flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
    assert!(diff > 0.0 && diff < 0.1, "bf16 vs f32 candidates: max abs difference {diff}");
    let refused = ims3().args(["sample", "--dataset", "fashion-mnist", "--dtype", "f8", "--dit"]).arg(&dit).arg("--out").arg(d.join("f8")).output().unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("f8"), "{}", String::from_utf8_lossy(&refused.stderr));
    // Two workers sharing the classes (--shard 0/2, 1/2) into one folder write exactly what one
    // worker writes.
    let sharded = d.join("sharded");
    for shard in ["0/2", "1/2"] {
        ok(ims3().args(["sample", "--dataset", "fashion-mnist", "--per-class", "2", "--steps", "3", "--sampler", "ddim", "--shard", shard, "--dit"]).arg(&dit).arg("--out").arg(&sharded).output().unwrap());
    }
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = walk(dir).into_iter().map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap())).collect();
        v.sort();
        v
    };
    assert_eq!(files(&sharded), files(&d.join("ddim")));
    // S3's encoding shared by two workers (--shard 0/2, 1/2), then a run that selects: the same
    // selection, images and centroids as one run.
    let select = |out: &Path, shard: Option<&str>| {
        let mut c = ims3();
        c.args(["select", "--groups", "1", "--ipc", "2", "--real-max", "5", "--dataset", "fashion-mnist", "--encoder"])
            .arg(&enc)
            .arg("--real-idx")
            .arg(&idx)
            .arg("--candidates")
            .arg(d.join("ddim"))
            .arg("--out")
            .arg(out);
        if let Some(s) = shard {
            c.args(["--shard", s]);
        }
        ok(c.output().unwrap());
    };
    select(&d.join("sel-one"), None);
    select(&d.join("sel-shards"), Some("1/2"));
    assert!(!d.join("sel-shards/selection.json").exists(), "a shard only encodes");
    select(&d.join("sel-shards"), Some("0/2"));
    select(&d.join("sel-shards"), None);
    for f in ["selection.json", "centroids.safetensors", "final_distilled/train/9-ankle-boot/0001.png"] {
        assert_eq!(std::fs::read(d.join("sel-one").join(f)).unwrap(), std::fs::read(d.join("sel-shards").join(f)).unwrap(), "{f}");
    }
    let out = sample("euler", &d.join("euler"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown sampler 'euler': expected ddpm, ddim"), "{out:?}");

    // Errors: a missing DiT is named; a recipe key that does not exist is refused.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, text.replace("model.safetensors", "absent.safetensors")).unwrap();
    let out = reproduce(&bad);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("absent.safetensors"), "{out:?}");
    std::fs::write(&bad, text.replace("k = 2", "k = 2\nkk = 3")).unwrap();
    let out = reproduce(&bad);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("kk"), "{out:?}");
}

/// The built-in recipe parses and names the committed assets.
#[test]
fn builtin_fashion_mnist_recipe_is_listed() {
    let out = ims3().args(["reproduce", "--list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("fashion-mnist-ipc10"), "{text}");
}

/// The same job with a latent DiT: `train-vae` (a small AutoencoderKL on the IDX images), a DiT
/// pretrained on its latents (`pretrain --vae`, which keeps to that VAE on a rerun), and the
/// recipe's `assets.vae`: fine-tuning on latents, samples decoded to grey images.
#[test]
fn latent_ablation_job_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let idx = make_idx(d);
    let vae = d.join("vae");
    let out = ims3().args(["train-vae", "--channels", "8,8,8", "--groups", "4", "--latent-channels", "4", "--epochs", "1", "--batch", "16", "--idx"]).arg(&idx).arg("--out").arg(&vae).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("scaling_factor"), "{out:?}");
    ok(out);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(vae.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["in_channels"].as_u64(), cfg["latent_channels"].as_u64()), (Some(1), Some(4)));
    assert!(cfg["scaling_factor"].as_f64().unwrap() > 0.0);
    let dit_dir = d.join("pt");
    let pretrain = |vae: Option<&Path>, steps: &str| {
        let mut c = ims3();
        c.args(["pretrain", "--hidden", "32", "--depth", "2", "--heads", "2", "--patch", "1", "--batch", "8", "--steps", steps, "--idx"]).arg(&idx).arg("--out").arg(&dit_dir);
        if let Some(v) = vae {
            c.arg("--vae").arg(v);
        }
        c.output().unwrap()
    };
    let stderr = ok(pretrain(Some(&vae), "2"));
    assert!(stderr.contains("on 80 latents 4x7x7"), "{stderr}");
    // The run folder keeps to its VAE: resuming without it is refused.
    let r = pretrain(None, "3");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("vae.json"), "{}", String::from_utf8_lossy(&r.stderr));
    let enc = d.join("enc.safetensors");
    ok(ims3().args(["train-encoder", "--width", "8", "--epochs", "1", "--batch", "16", "--idx"]).arg(&idx).arg("--out").arg(&enc).output().unwrap());

    let recipe = d.join("latent.toml");
    std::fs::write(&recipe, recipe_text(&dit_dir.join("model.safetensors"), &enc, &idx, Some(&vae))).unwrap();
    let (runs, results) = (d.join("runs"), d.join("results"));
    ok(ims3().arg("reproduce").arg(&recipe).arg("--run-dir").arg(&runs).arg("--results").arg(&results).output().unwrap());
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(runs.join("finetune/run.json")).unwrap()).unwrap();
    assert_eq!(run["vae"].as_str(), Some(vae.display().to_string().as_str()));
    assert_eq!(run["dit_config"]["in_channels"].as_u64(), Some(4));
    // Decoded candidates are 28x28 grey images (the one channel repeated).
    let cands = ims3_s3::pipeline::read_candidates(&runs.join("candidates-im"), "9-ankle-boot").unwrap();
    assert_eq!(cands.len(), 4);
    let plane = 28 * 28;
    assert!(cands.iter().all(|c| c.width == 28 && c.height == 28 && c.data[..plane] == c.data[plane..2 * plane] && c.data[..plane] == c.data[2 * plane..]));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["inputs"]["vae"]["sha256"].as_str().map(str::len), Some(64), "{manifest}");
    let md = std::fs::read_to_string(results.join("results.md")).unwrap();
    assert!(md.contains("| IMS3 (IM + S3) |"), "{md}");
}
