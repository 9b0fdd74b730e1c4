//! The small-image job (an [`AblationRecipe`], `kind = "pixel-ablation"`,
//! `recipes/fashion-mnist-ipc10.toml`): IMS3 and its ablations end to end on a dataset the
//! package registries ship, on the CPU.
//!
//! Inputs: a DiT pretrained on the real training set (`ims3 pretrain`) standing in for
//! DiT-XL/2, in pixels or (with `assets.vae`, a `train-vae` folder) in a small VAE's latents
//! as DiT-XL/2 works in the SD-VAE's, a ConvNet classifier trained on it (`ims3
//! train-encoder`) standing in for the
//! ImageNet ResNet-18 of S3, and the IDX files. Stages, each recorded by `<run>/<stage>.done`:
//!
//! ```text
//! data          the training split cut once (`holdout.rs`): a validation split held out, the
//!               rest (`fit`), and the IM fine-tuning set drawn from it
//! finetune      IM fine-tuning (Difffit) of the DiT on the fine-tuning set
//! sample-dit    G x IPC candidates per class from the pretrained DiT
//! sample-im     the same from the IM fine-tuned DiT (same noise)
//! select-s3     S3 over the pretrained DiT's candidates
//! select-ims3   S3 over the IM candidates (= IMS3)
//! arms-<arm>    the five distilled sets as folders: random real, DiT (group 0), IM (group 0), S3, IMS3
//! eval-<arm>-seed<s>  ConvNet-3 on each set, one stage per seed: validated every `eval_every`
//!               epochs on the held-out validation split, tested once, after the last epoch, on
//!               the 10k real test images
//! report        results.md/json (table, paired comparisons, literature), contact sheets,
//!               embedding plots, feature measures of the sets and of the two generators
//! ```
//!
//! The test split is read by the evaluations' last step only: every choice (epochs, settings)
//! is made on the validation split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ims3_backend::DeviceSpec;
use ims3_features::FeatureEncoder;
use ims3_images::Rgb;
use serde::Serialize;

use super::holdout::{self, DataDirs};
use super::recipe::{AblationRecipe, Recipe};
use super::report::{pm, read_eval, stage_table, write_results};
use super::runner::{Invocation, Node, Runner, StageKind, Timing, git_revision};
use super::stages::{Shared, TestSet, TrainingSet};
use crate::args::to_args;

/// The five distilled sets compared, in table order.
pub const ARMS: [(&str, &str); 5] = [
    ("random-real", "random real subset"),
    ("dit", "plain DiT samples"),
    ("im", "IM only"),
    ("s3", "S3 only"),
    ("ims3", "IMS3 (IM + S3)"),
];

pub const STAGES: [StageKind; 7] = [
    StageKind { name: "data", outputs: &["data"] },
    StageKind { name: "finetune", outputs: &["finetune"] },
    StageKind { name: "sample", outputs: &["candidates-dit", "candidates-im"] },
    StageKind { name: "select", outputs: &["s3", "ims3"] },
    StageKind { name: "arms", outputs: &["arms"] },
    StageKind { name: "eval", outputs: &[] },
    StageKind { name: "report", outputs: &[] },
];

fn idx_dir(recipe: &AblationRecipe, cache: &Path) -> PathBuf {
    if let Some(p) = &recipe.assets.idx {
        return p.clone();
    }
    let debian = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if debian.join("train-images-idx3-ubyte.gz").is_file() { debian } else { cache.join("fashion-mnist") }
}

/// Runs the job.
pub fn run(recipe: AblationRecipe, at: &Invocation) -> Result<()> {
    let started = Instant::now();
    let revision = git_revision(); // before any output is written
    let (run_dir, results, device) = (&at.run_dir, &at.results, &at.device);
    let idx = idx_dir(&recipe, &at.cache);
    let spec = ims3_datasets::DatasetSpec::get(&recipe.dataset)?;
    let missing: Vec<String> =
        [Some(&recipe.assets.dit), Some(&recipe.assets.encoder), recipe.assets.vae.as_ref(), Some(&idx)].into_iter().flatten().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    ensure!(
        missing.is_empty(),
        "missing inputs: {} (the DiT and encoder are committed under assets/; the IDX files come from `apt-get install dataset-fashion-mnist` or `ims3 fetch fashion-mnist-train-images fashion-mnist-train-labels fashion-mnist-test-images fashion-mnist-test-labels`)",
        missing.join(", ")
    );
    let mut runner = Runner::new(at, &STAGES, recipe.eval.parallel)?;
    std::fs::create_dir_all(results)?;

    // The training split cut once: validation held out, the fine-tuning set drawn.
    let dirs = DataDirs::under(run_dir);
    let classes: Vec<(String, u8)> = spec.classes.iter().map(|c| (c.wnid.clone(), c.imagenet as u8)).collect();
    runner.local("data", || holdout::write(&idx, &classes, &recipe.data, recipe.seed, &dirs))?;
    if runner.stop_after("data") {
        return Ok(());
    }

    // Everything between the data and the report as one graph: fine-tuning (the longest chain)
    // runs beside the stages that do not need it (the pretrained DiT's candidates, S3 over them,
    // and the random-real, DiT and S3 evaluations).
    let cfg_path = run_dir.join("train.toml");
    ims3_util::atomic_write(&cfg_path, Recipe::train_toml(&recipe.train, recipe.seed)?.as_bytes())?;
    let ft = run_dir.join("finetune");
    let shared = Shared { dataset: &recipe.dataset, ipc: recipe.ipc, seed: recipe.seed, sample: &recipe.sample, select: &recipe.select };
    let (cand_dit, cand_im) = (run_dir.join("candidates-dit"), run_dir.join("candidates-im"));
    let select_args = |cands: &Path, out: &Path| {
        let mut a = shared.select(cands, &recipe.assets.encoder, spec.classes.iter().map(|c| c.wnid.clone()).collect(), out);
        a.real_idx = Some(dirs.fit.clone());
        a
    };
    let arms_dir = run_dir.join("arms");
    let eval_args = |arm: &str, seed: u64| {
        let mut a = shared.eval(&arms_dir.join(arm), &recipe.eval.net, TestSet::Idx(&dirs.fit), &eval_dir(results, arm, seed));
        a.val = Some(dirs.validation.clone());
        a.test_at = ims3_eval::TestAt::Final;
        a.batch = Some(recipe.eval.batch);
        a.width = Some(recipe.eval.width);
        a.size = 28;
        a.epochs = Some(recipe.eval.epochs);
        a.eval_every = Some(recipe.eval.eval_every);
        a.lr = Some(recipe.eval.lr);
        a.seeds = vec![seed];
        a
    };
    for (arm, _) in ARMS {
        for &seed in &recipe.eval.seeds {
            runner.clear_if_redone("eval", &eval_dir(results, arm, seed).join("seeds"))?;
        }
    }
    // A latent DiT (`assets.vae`) learns and samples through the VAE; a pixel DiT without one.
    let mut finetune_args = shared.finetune(&recipe.assets.dit, TrainingSet::Idx(&dirs.finetune), &cfg_path, &ft);
    finetune_args.vae = recipe.assets.vae.clone();
    let sample_args = |finetuned: Option<&Path>, out: &Path| {
        let mut a = shared.sample(&recipe.assets.dit, finetuned, out);
        a.vae = recipe.assets.vae.clone();
        a
    };
    let mut nodes = vec![
        Node::child("finetune", to_args("finetune", &finetune_args), &[]),
        Node::sharded("sample-dit", to_args("sample", &sample_args(None, &cand_dit)), &[]),
        Node::sharded("sample-im", to_args("sample", &sample_args(Some(&ft), &cand_im)), &["finetune"]),
        Node::sharded("select-s3", to_args("select", &select_args(&cand_dit, &run_dir.join("s3"))), &["sample-dit"]),
        Node::sharded("select-ims3", to_args("select", &select_args(&cand_im, &run_dir.join("ims3"))), &["sample-im"]),
    ];
    // The five sets as image folders, each once its source exists.
    for (arm, _) in ARMS {
        let source: &[&str] = match arm {
            "random-real" => &[],
            "dit" => &["sample-dit"],
            "im" => &["sample-im"],
            "s3" => &["select-s3"],
            _ => &["select-ims3"],
        };
        let (recipe, spec, fit, arms_dir) = (&recipe, &spec, &dirs.fit, &arms_dir);
        nodes.push(Node::local(format!("arms-{arm}"), source, move || write_arm(recipe, spec, fit, run_dir, arms_dir, arm)));
    }
    // Evaluations: one stage per (set, seed), so the workers stay busy to the end.
    for (arm, _) in ARMS {
        for &seed in &recipe.eval.seeds {
            nodes.push(Node::sharded(format!("eval-{arm}-seed{seed}"), to_args("eval", &eval_args(arm, seed)), &[&format!("arms-{arm}")]));
        }
    }
    runner.graph(nodes)?;
    if runner.only_one_kind() {
        return Ok(());
    }

    // Report.
    let measures = runner.always("report", || report(&recipe, &spec, &dirs.fit, run_dir, &arms_dir, results, device))?;
    let total = started.elapsed().as_secs_f64();
    write_ablation_results(&recipe, &spec, results, &measures, &runner.timings, total, at)?;
    let page = write_figures_and_page(&recipe, results, run_dir)?;
    let fields = serde_json::json!({
        "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "inputs": {
            "dit": {"path": recipe.assets.dit.display().to_string(), "sha256": ims3_fetch::sha256_file(&recipe.assets.dit)?},
            "encoder": {"path": recipe.assets.encoder.display().to_string(), "sha256": ims3_fetch::sha256_file(&recipe.assets.encoder)?},
            "vae": match &recipe.assets.vae {
                Some(dir) => serde_json::json!({"path": dir.display().to_string(), "sha256": ims3_fetch::sha256_file(&dir.join("diffusion_pytorch_model.safetensors"))?}),
                None => serde_json::Value::Null,
            },
            "idx": idx_hashes(&idx)?,
        },
        "seconds": total,
    });
    runner.write_manifest(revision.as_deref(), fields, &[run_dir, results])?;
    print!("{}", std::fs::read_to_string(results.join("results.md"))?);
    println!("\nreport: file://{}", std::fs::canonicalize(&page)?.display());
    Ok(())
}

/// Where one seed's evaluation of one set is written.
fn eval_dir(results: &Path, arm: &str, seed: u64) -> PathBuf {
    results.join("eval").join(format!("{arm}-seed{seed}"))
}

fn idx_hashes(dir: &Path) -> Result<serde_json::Value> {
    let mut m = serde_json::Map::new();
    for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let f = [format!("{stem}.gz"), stem.to_string()].into_iter().map(|n| dir.join(n)).find(|p| p.is_file());
        if let Some(f) = f {
            m.insert(f.file_name().unwrap().to_string_lossy().into_owned(), serde_json::Value::String(ims3_fetch::sha256_file(&f)?));
        }
    }
    Ok(serde_json::Value::Object(m))
}

fn to_unit(img: &Rgb) -> Rgb {
    img.clone().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0))
}

/// Writes `<arms>/<arm>/<class>/NNNN.png` for one of the five sets (a temporary folder, then
/// renamed).
fn write_arm(recipe: &AblationRecipe, spec: &ims3_datasets::DatasetSpec, idx: &Path, run_dir: &Path, arms: &Path, arm: &str) -> Result<()> {
    let ipc = recipe.ipc;
    let train = if arm == "random-real" { Some(ims3_images::idx::IdxSplit::read(idx, "train")?) } else { None };
    let tmp = arms.join(format!(".{arm}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    for (k, class) in spec.classes.iter().enumerate() {
        let dir = tmp.join(&class.wnid);
        let images: Vec<Rgb> = match (arm, &train) {
            ("random-real", Some(train)) => {
                let ids = train.of_class(class.imagenet as u8);
                ensure!(ids.len() >= ipc, "{}: class {} has {} training images, fewer than {ipc}", idx.display(), class.wnid, ids.len());
                ims3_datasets::seeded_choice(&ids, ipc, recipe.seed, k as u64).iter().map(|&i| train.rgb(i)).collect()
            }
            ("dit" | "im", _) => {
                let c = ims3_s3::pipeline::read_candidates(&run_dir.join(format!("candidates-{arm}")), &class.wnid)?;
                c[..ipc].to_vec()
            }
            _ => {
                let src = run_dir.join(arm).join("final_distilled/train").join(&class.wnid);
                let files = ims3_images::list_images(&src)?;
                ensure!(files.len() == ipc, "{}: {} images, expected {ipc}", src.display(), files.len());
                files.iter().map(|f| ims3_images::read_rgb(f).map(|i| i.map(|v| v * 2.0 - 1.0))).collect::<Result<_, _>>()?
            }
        };
        for (i, img) in images.iter().enumerate() {
            ims3_images::write_png(&dir.join(format!("{i:04}.png")), &to_unit(img))?;
        }
    }
    let dst = arms.join(arm);
    if dst.exists() {
        std::fs::remove_dir_all(&dst)?;
    }
    std::fs::rename(&tmp, &dst)?;
    Ok(())
}

/// Feature measures of a set of images per class (encoder features, L2-normalised).
#[derive(Clone, Debug, Serialize)]
pub struct SetMeasures {
    /// The arm (or `candidates-dit` / `candidates-im`, or `real`).
    pub set: String,
    /// Coverage and density (Naeem et al. 2020) against the real features, averaged over classes.
    pub coverage: f64,
    pub density: f64,
    /// Cosine distance between the set's class centroid and the real one, averaged over classes
    /// (S3's closeness).
    pub centroid_distance: f64,
    /// Mean pairwise Euclidean distance of the set's features within a class (spread).
    pub spread: f64,
    /// Mean cosine distance between the set's class centroids over all pairs of classes
    /// (inter-class separation: S3's "far from each other").
    pub separation: f64,
}

impl SetMeasures {
    /// The measures of `feats[class][image]` against `real[class][image]`.
    fn of(set: &str, feats: &[Vec<Vec<f64>>], real: &[Vec<Vec<f64>>], k: usize) -> Self {
        let n = feats.len() as f64;
        let (mut cov, mut den, mut cd, mut spread) = (0.0, 0.0, 0.0, 0.0);
        for (f, r) in feats.iter().zip(real) {
            let (cv, dn) = ims3_report::coverage_density(r, f, k);
            cov += cv;
            den += dn;
            cd += ims3_s3::cosine_distance(&ims3_s3::centroid(f), &ims3_s3::centroid(r));
            spread += mean_pairwise(f);
        }
        Self { set: set.into(), coverage: cov / n, density: den / n, centroid_distance: cd / n, spread: spread / n, separation: separation(feats) }
    }

    /// The real features' own spread and separation (their coverage and density are not
    /// defined against themselves).
    fn real(real: &[Vec<Vec<f64>>]) -> Self {
        let spread = real.iter().map(|f| mean_pairwise(f)).sum::<f64>() / real.len() as f64;
        Self { set: "real".into(), coverage: f64::NAN, density: f64::NAN, centroid_distance: 0.0, spread, separation: separation(real) }
    }
}

/// Mean cosine distance between the class centroids of `feats[class][image]`, over class pairs.
fn separation(feats: &[Vec<Vec<f64>>]) -> f64 {
    let c: Vec<Vec<f64>> = feats.iter().map(|f| ims3_s3::centroid(f)).collect();
    let (mut s, mut n) = (0.0, 0usize);
    for i in 0..c.len() {
        for j in i + 1..c.len() {
            s += ims3_s3::cosine_distance(&c[i], &c[j]);
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// What the report stage measures: each arm's set, the two generators' whole candidate pools
/// (before and after IM), and the real features.
#[derive(Clone, Debug, Serialize)]
pub struct Measures {
    pub arms: Vec<SetMeasures>,
    pub generators: Vec<SetMeasures>,
    pub real: SetMeasures,
}

fn read_arm(arms: &Path, arm: &str, spec: &ims3_datasets::DatasetSpec) -> Result<Vec<Vec<Rgb>>> {
    spec.classes
        .iter()
        .map(|c| {
            let files = ims3_images::list_images(&arms.join(arm).join(&c.wnid))?;
            files.iter().map(|f| ims3_images::read_rgb(f).map(|i| i.map(|v| v * 2.0 - 1.0)).map_err(anyhow::Error::from)).collect()
        })
        .collect()
}

fn mean_pairwise(f: &[Vec<f64>]) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for i in 0..f.len() {
        for j in i + 1..f.len() {
            s += f[i].iter().zip(&f[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// Contact sheets, the embedding plot and the feature measures.
fn report(recipe: &AblationRecipe, spec: &ims3_datasets::DatasetSpec, idx: &Path, run_dir: &Path, arms: &Path, results: &Path, device: &DeviceSpec) -> Result<Measures> {
    let dev = device.open()?;
    let encoder = ims3_features::ConvNetEncoder::load(&recipe.assets.encoder, dev)?;
    let train = ims3_images::idx::IdxSplit::read(idx, "train")?;
    // Real features: a seeded choice of `real_per_class` training images per class.
    let mut real: Vec<Vec<Vec<f64>>> = Vec::new();
    for (k, class) in spec.classes.iter().enumerate() {
        let ids = ims3_datasets::seeded_choice(&train.of_class(class.imagenet as u8), recipe.report.real_per_class, recipe.seed ^ 0x5eed, k as u64);
        ensure!(ids.len() > recipe.report.k, "class {}: {} real images, need more than k = {}", class.wnid, ids.len(), recipe.report.k);
        let imgs: Vec<Rgb> = ids.iter().map(|&i| train.rgb(i)).collect();
        real.push(encoder.encode(&imgs));
    }
    let all_real: Vec<Vec<f64>> = real.iter().flatten().cloned().collect();
    let class_names: Vec<String> = spec.classes.iter().map(|c| c.name.clone()).collect();
    let mut measures = Vec::new();
    let mut distilled: Vec<Vec<Vec<Vec<f64>>>> = Vec::new(); // [arm][class][image] features
    for (arm, label) in ARMS {
        let images = read_arm(arms, arm, spec)?;
        let sheet = ims3_report::labelled_contact_sheet(&format!("{label}: {} images per class", recipe.ipc), &images, &class_names, 2, 2)?;
        crate::figures::write(&results.join(format!("distilled-{arm}.svg")), &sheet)?;
        let feats: Vec<Vec<Vec<f64>>> = images.iter().map(|imgs| encoder.encode(imgs)).collect();
        measures.push(SetMeasures::of(arm, &feats, &real, recipe.report.k));
        distilled.push(feats);
    }
    // The generators before and after IM, over every candidate (G x IPC per class, same noise).
    let mut generators = Vec::new();
    for which in ["dit", "im"] {
        let dir = run_dir.join(format!("candidates-{which}"));
        let feats: Vec<Vec<Vec<f64>>> =
            spec.classes.iter().map(|c| Ok(encoder.encode(&ims3_s3::pipeline::read_candidates(&dir, &c.wnid)?))).collect::<Result<_>>()?;
        generators.push(SetMeasures::of(&format!("candidates-{which}"), &feats, &real, recipe.report.k));
    }
    // The IMS3 set is the job's product: its sheet also under the plain name.
    std::fs::copy(results.join("distilled-ims3.svg"), results.join("contact-sheet.svg"))?;

    // Embeddings of real and distilled features, one panel per method on one shared map: PCA
    // fitted on the real features, and t-SNE (as the paper) fitted jointly on every method's
    // distilled features and the first `TSNE_REAL_PER_CLASS` real ones of each class.
    // Panels from one 2-D position per plotted feature, in the order: the first
    // `real_per_class` real features of each class, then each method's distilled features
    // class by class.
    let panels = |xy: &[[f64; 2]], real_per_class: usize| -> Vec<ims3_report::EmbeddingPanel> {
        let mut at = xy.iter();
        let mut next = || *at.next().expect("one position per plotted feature");
        let real_pts: Vec<ims3_report::EmbeddedPoint> =
            real.iter().enumerate().flat_map(|(c, fs)| (0..fs.len().min(real_per_class)).map(move |_| c)).map(|c| ims3_report::EmbeddedPoint { xy: next(), class: c }).collect();
        ARMS.iter()
            .zip(&distilled)
            .map(|((_, label), feats)| ims3_report::EmbeddingPanel {
                title: label.to_string(),
                real: real_pts.clone(),
                distilled: feats.iter().enumerate().flat_map(|(c, fs)| (0..fs.len()).map(move |_| c)).map(|c| ims3_report::EmbeddedPoint { xy: next(), class: c }).collect(),
            })
            .collect()
    };
    let plotted = |real_per_class: usize| -> Vec<Vec<f64>> {
        let mut v: Vec<Vec<f64>> = real.iter().flat_map(|fs| fs.iter().take(real_per_class).cloned()).collect();
        v.extend(distilled.iter().flatten().flatten().cloned());
        v
    };
    let pca = ims3_report::Pca::fit(&all_real, 2);
    let pca_xy: Vec<[f64; 2]> = plotted(TSNE_REAL_PER_CLASS).iter().map(|f| {
        let v = pca.project(f);
        [v[0], v[1]]
    }).collect();
    let title = |how: &str| format!("{how} of the encoder features: real training images (dots) and each method's distilled images (squares)");
    crate::figures::write(&results.join("embedding-pca.svg"), &ims3_report::embedding_panels(&title("PCA"), "PC", &panels(&pca_xy, TSNE_REAL_PER_CLASS), &class_names, 320)?)?;
    let tsne_xy = ims3_report::tsne_2d(&plotted(TSNE_REAL_PER_CLASS), &ims3_report::TsneOptions { seed: recipe.seed, ..Default::default() })?;
    let tsne_panels = panels(&tsne_xy, TSNE_REAL_PER_CLASS);
    crate::figures::write(&results.join("embedding-tsne.svg"), &ims3_report::embedding_panels(&title("t-SNE"), "t-SNE", &tsne_panels, &class_names, 320)?)?;
    Ok(Measures { arms: measures, generators, real: SetMeasures::real(&real) })
}

/// Real features per class in the t-SNE fit (with every distilled one): enough to show the
/// class clouds, few enough for the exact gradient.
const TSNE_REAL_PER_CLASS: usize = 100;

/// The figures of the whole run beside `results.md`, and `report.html` holding it and them.
fn write_figures_and_page(recipe: &AblationRecipe, results: &Path, run_dir: &Path) -> Result<PathBuf> {
    let mut bands = Vec::new();
    for (arm, label) in ARMS {
        let seeds: Vec<ims3_eval::SeedResult> = recipe.eval.seeds.iter().map(|&s| read_eval(&eval_dir(results, arm, s)).map(|r| r.seeds)).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect();
        bands.push(crate::figures::accuracy_band(label, &seeds, crate::figures::Split::Validation));
    }
    let accuracy = crate::figures::accuracy_figure(
        &format!("{} on each distilled set: validation top-1 vs epoch", recipe.eval.net),
        &bands,
        crate::figures::Split::Validation,
    )?;
    let losses = crate::figures::loss_figure("IM fine-tuning of the DiT: loss terms vs step", &run_dir.join("finetune/metrics.jsonl"))?;
    let (s3, ims3) = (run_dir.join("s3/selection.json"), run_dir.join("ims3/selection.json"));
    let objective = crate::figures::objective_figure("S3 objective per sweep", &[("S3 (pretrained DiT)".to_string(), &s3), ("IMS3 (IM fine-tuned DiT)".to_string(), &ims3)])?;
    for (name, svg) in [("accuracy.svg", &accuracy), ("finetune-losses.svg", &losses), ("s3-objective.svg", &objective)] {
        crate::figures::write(&results.join(name), svg)?;
    }
    let read = |name: &str| std::fs::read_to_string(results.join(name)).with_context(|| format!("{}: cannot read", results.join(name).display()));
    let mut figures = vec![ims3_report::Figure { caption: "Validation top-1 vs epoch (mean and band of one std over seeds)".into(), svg: accuracy }];
    for (caption, file) in [
        ("t-SNE of real and distilled features", "embedding-tsne.svg"),
        ("PCA of real and distilled features", "embedding-pca.svg"),
    ] {
        figures.push(ims3_report::Figure { caption: caption.into(), svg: read(file)? });
    }
    for (arm, label) in ARMS {
        figures.push(ims3_report::Figure { caption: format!("Distilled set: {label}"), svg: read(&format!("distilled-{arm}.svg"))? });
    }
    figures.push(ims3_report::Figure { caption: "IM fine-tuning losses".into(), svg: losses });
    figures.push(ims3_report::Figure { caption: "S3 objective per sweep".into(), svg: objective });
    let page = ims3_report::report_html(&recipe.name, &read("results.md")?, &figures);
    let path = results.join("report.html");
    ims3_util::atomic_write(&path, page.as_bytes())?;
    Ok(path)
}

/// The paired comparisons of the results table: (a, b) reads "a - b".
pub const COMPARISONS: [(&str, &str); 7] =
    [("im", "dit"), ("s3", "dit"), ("ims3", "dit"), ("dit", "random-real"), ("im", "random-real"), ("s3", "random-real"), ("ims3", "random-real")];

fn label_of(arm: &str) -> &'static str {
    ARMS.iter().find(|(a, _)| *a == arm).map(|(_, l)| *l).expect("a known arm")
}

/// The validation top-1 after the last epoch.
fn final_val(s: &ims3_eval::SeedResult) -> Option<f64> {
    s.curve.last().and_then(|c| c.2)
}

fn write_ablation_results(recipe: &AblationRecipe, spec: &ims3_datasets::DatasetSpec, results: &Path, measures: &Measures, timings: &[Timing], total: f64, at: &Invocation) -> Result<()> {
    let h = &recipe.data;
    let mut md = format!(
        "# {}\n\n{} IPC {}: {} width {} trained on each distilled set for {} epochs (batch {}, lr {}); validated every {} epochs on {} training images per class held out \
from everything else (the curves in `accuracy.svg`), tested once, after the last epoch, on the {} real test images; mean +- sample std over seeds {:?}. \
IOR (DD-Ranking's improvement over random) = the set's test top-1 minus the random real subset's, seed by seed, mean +- sample std of the differences; \
no full-data run exists for this protocol, so HLR and LRS are not given. Feature measures (the encoder's L2-normalised features) are explained below the tables.\n\n\
| method | test top-1 (final epoch) | validation top-1 (final epoch) | best validation epoch per seed | IOR |\n|---|---|---|---|---|\n",
        recipe.name, spec.name, recipe.ipc, recipe.eval.net.id(), recipe.eval.width, recipe.eval.epochs, recipe.eval.batch, recipe.eval.lr, recipe.eval.eval_every,
        h.validation_per_class, 10000, recipe.eval.seeds
    );
    let mut per_arm: Vec<(&str, Vec<ims3_eval::SeedResult>)> = Vec::new();
    for (arm, _) in ARMS {
        let mut seeds = Vec::new();
        for &seed in &recipe.eval.seeds {
            let dir = eval_dir(results, arm, seed);
            let rep = read_eval(&dir)?;
            seeds.push(rep.seeds.into_iter().next().with_context(|| format!("{}: eval.json holds no seed", dir.display()))?);
        }
        per_arm.push((arm, seeds));
    }
    let top1 = |arm: &str| -> Vec<f64> { per_arm.iter().find(|(a, _)| *a == arm).expect("every arm").1.iter().map(|s| s.final_top1).collect() };
    let mut rows = Vec::new();
    for ((arm, seeds), m) in per_arm.iter().zip(&measures.arms) {
        let fin = ims3_eval::mean_std(&top1(arm));
        let val: Option<Vec<f64>> = seeds.iter().map(final_val).collect();
        let val = val.map(|v| ims3_eval::mean_std(&v));
        let best_epochs: Vec<String> = seeds.iter().map(|s| s.val_best_epoch.map_or("-".into(), |e| e.to_string())).collect();
        // Seeds are the same list for every arm, in the same order.
        let ior = (*arm != "random-real").then(|| {
            let d: Vec<f64> = top1(arm).iter().zip(top1("random-real")).map(|(s, r)| ims3_eval::ranking::ior(*s, r)).collect();
            ims3_eval::mean_std(&d)
        });
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            label_of(arm),
            pm(fin),
            val.map_or("-".into(), pm),
            best_epochs.join(", "),
            ior.map_or("-".to_string(), |(m, s)| format!("{m:+.2} +- {s:.2}")),
        ));
        rows.push(serde_json::json!({"arm": arm, "method": label_of(arm), "final_top1": [fin.0, fin.1], "final_val_top1": val.map(|v| [v.0, v.1]), "ior": ior, "seeds": seeds, "measures": m}));
    }

    md.push_str(&format!(
        "\nPaired comparisons of the test top-1 (final epoch), seed by seed over {} seeds: mean difference in points and its 95% confidence interval \
(Student's t, n - 1 degrees of freedom); an interval that holds 0 shows no difference at this number of seeds.\n\n\
| comparison | mean difference | 95% CI | what it shows |\n|---|---|---|---|\n",
        recipe.eval.seeds.len()
    ));
    let mut comparisons = Vec::new();
    for (a, b) in COMPARISONS {
        let d = ims3_eval::PairedDifference::of(&top1(a), &top1(b));
        let shows = match d.sign() {
            1 => format!("{} above {}", label_of(a), label_of(b)),
            -1 => format!("{} below {}", label_of(a), label_of(b)),
            _ => "no difference shown".to_string(),
        };
        let ci = d.ci95.map_or("-".to_string(), |(lo, hi)| format!("[{lo:+.2}, {hi:+.2}]"));
        md.push_str(&format!("| {} - {} | {:+.2} | {ci} | {shows} |\n", label_of(a), label_of(b), d.mean));
        comparisons.push(serde_json::json!({"a": a, "b": b, "difference": d}));
    }

    md.push_str(&format!(
        "\nFeature measures against {} real training images per class (not the validation images): coverage and density (Naeem et al. 2020, k = {}), \
centroid distance = cosine distance of a class centroid to the real one, spread = mean pairwise feature distance within a class (all averaged over classes), \
separation = mean cosine distance between the class centroids over all pairs of classes. The distilled sets first, then the two generators' whole candidate pools \
({} per class, the same noise for both): the effect of IM on what the generator draws.\n\n\
| set | coverage | density | centroid distance | spread | separation |\n|---|---|---|---|---|---|\n",
        recipe.report.real_per_class,
        recipe.report.k,
        recipe.select.groups * recipe.ipc
    ));
    let measure_row = |name: &str, m: &SetMeasures| {
        let num = |v: f64, d: usize| if v.is_finite() { format!("{v:.d$}") } else { String::new() };
        format!("| {name} | {} | {} | {} | {} | {} |\n", num(m.coverage, 3), num(m.density, 3), num(m.centroid_distance, 4), num(m.spread, 3), num(m.separation, 4))
    };
    for ((arm, _), m) in ARMS.iter().zip(&measures.arms) {
        md.push_str(&measure_row(label_of(arm), m));
    }
    for (m, name) in measures.generators.iter().zip(["pretrained DiT, all candidates", "IM fine-tuned DiT, all candidates"]) {
        md.push_str(&measure_row(name, m));
    }
    md.push_str(&measure_row("(real training images)", &measures.real));

    if !recipe.literature.is_empty() {
        md.push_str("\nPublished Fashion-MNIST IPC-10 figures (ConvNet-3 width 128, other training protocols; for orientation, not a like-for-like comparison):\n\n| method | top-1 | source |\n|---|---|---|\n");
        for l in &recipe.literature {
            md.push_str(&format!("| {} | {} | {} |\n", l.method, l.top1, l.source));
        }
    }
    md.push_str("\nFigures (also in `report.html`): `accuracy.svg` (validation top-1 vs epoch per method, mean and one-std band over seeds), \
`embedding-tsne.svg` and `embedding-pca.svg` (the encoder features of real training images and of each method's distilled images, one panel per method), \
`contact-sheet.svg` (IMS3) and `distilled-<method>.svg` (each set, one row per class, class names beside), `finetune-losses.svg` (the IM fine-tuning's loss terms vs step), \
`s3-objective.svg` (the S3 objective per coordinate-ascent sweep, for S3 and IMS3).\n");
    md.push_str(&stage_table(timings));
    md.push_str(&format!(
        "\nWall time of this invocation: {total:.0} s on {} threads. Produced by: `ims3 --device {} reproduce {}` (via `cargo xtask reproduce {}`).\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        at.device,
        at.recipe,
        at.recipe
    ));
    let summary = serde_json::json!({
        "recipe": recipe.name, "dataset": spec.name, "ipc": recipe.ipc, "data": recipe.data, "eval": recipe.eval, "rows": rows,
        "comparisons": comparisons, "generators": measures.generators, "real": measures.real,
        "literature": recipe.literature, "seconds": total, "stages": timings,
    });
    write_results(results, &summary, &md)?;
    if !measures.arms.iter().any(|m| m.coverage.is_finite()) {
        bail!("no measures were computed");
    }
    Ok(())
}
