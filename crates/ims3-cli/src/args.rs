//! A subcommand's typed arguments back to a command line, for the pipeline's child processes:
//! every field of the `Args` struct becomes `--<field-name>` (clap's kebab-case long flag) with
//! its value as the field's serialised text; `false`, `None` and empty lists are left out, lists
//! are joined with commas. The tests at the end parse each child command back and compare, so a
//! renamed or re-typed flag fails `cargo test`, not a run.

use std::ffi::OsString;

use serde::Serialize;
use serde_json::Value;

/// A subcommand's arguments parsed from `required` alone: every other field takes the default
/// its clap attribute declares, so a stage built here differs from the command line's defaults
/// only where the caller sets a field.
pub fn with_defaults<T: clap::Args + clap::FromArgMatches>(subcommand: &str, required: &[(&str, OsString)]) -> T {
    let argv = std::iter::once(OsString::from(subcommand)).chain(required.iter().flat_map(|(flag, v)| [OsString::from(flag), v.clone()]));
    let matches = T::augment_args(clap::Command::new("ims3-stage")).try_get_matches_from(argv).unwrap_or_else(|e| panic!("{subcommand}: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{subcommand}: {e}"))
}

/// `[subcommand, --flag, value, ...]` for `args`.
pub fn to_args<T: Serialize>(subcommand: &str, args: &T) -> Vec<String> {
    let Value::Object(fields) = serde_json::to_value(args).expect("command arguments serialise") else {
        panic!("{subcommand}: arguments must be a struct");
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = vec![subcommand.to_string()];
    for (name, value) in fields {
        let flag = format!("--{}", name.replace('_', "-"));
        match value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => out.push(flag),
            Value::Array(items) if items.is_empty() => {}
            Value::Array(items) => out.extend([flag, items.iter().map(scalar).collect::<Vec<_>>().join(",")]),
            other => out.extend([flag, scalar(&other)]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::to_args;
    use crate::commands::{eval, finetune, sample, select};
    use crate::{Cli, Command};

    fn parse(argv: Vec<String>) -> Command {
        Cli::try_parse_from(std::iter::once("ims3".to_string()).chain(argv)).unwrap_or_else(|e| panic!("{e}")).command
    }

    /// Every field set to a value other than its default, so each flag is exercised.
    #[test]
    fn child_commands_parse_back_to_the_same_arguments() {
        let p = |s: &str| PathBuf::from(s);
        let s = sample::Args {
            dit: p("a b/dit.pt"),
            finetuned: Some(p("ck.safetensors")),
            raw: true,
            vae: Some(p("vae")),
            dataset: "imagenette".into(),
            per_class: 7,
            cfg_scale: 1.5,
            steps: "ddim25".parse().unwrap(),
            batch: 3,
            sampler: ims3_diffusion::Sampler::Ddim,
            dtype: ims3_dit::Precision::Bf16,
            folder_index_labels: true,
            heads: Some(6),
            seed: 9,
            shard: Some("1/3".parse().unwrap()),
            out: p("out"),
        };
        assert!(matches!(parse(to_args("sample", &s)), Command::Sample(back) if back == s));

        let sel = select::Args {
            candidates: p("c"),
            out: p("o"),
            encoder: Some(p("e.pth")),
            real: None,
            real_idx: Some(p("idx")),
            dataset: "fashion-mnist".into(),
            centroids: Some(p("cent.safetensors")),
            classes: vec!["n1".into(), "n2".into()],
            groups: 3,
            ipc: 2,
            alpha: 0.25,
            beta: 1e-3,
            eps: 1e-6,
            max_sweeps: 2,
            form: ims3_s3::Form::Paper,
            real_max: 11,
            seed: 4,
            skip_unreadable: true,
            shard: Some("0/2".parse().unwrap()),
        };
        assert!(matches!(parse(to_args("select", &sel)), Command::Select(back) if back == sel));

        let ev = eval::Args {
            distilled: p("d"),
            test: None,
            test_idx: Some(p("idx")),
            batch: Some(5),
            width: Some(16),
            val: Some(p("v")),
            dataset: "fashion-mnist".into(),
            net: "convnet4".parse().unwrap(),
            size: 28,
            ipc: 3,
            epochs: Some(12),
            eval_every: Some(4),
            lr: Some(0.05),
            seeds: vec![3, 1],
            norm: Some(ims3_nets::Norm::Batch),
            labels: eval::LabelKind::Soft,
            teacher: Some(p("r18.pth")),
            temperature: 4.0,
            test_transform: Some(ims3_augment::TestTransform::Resize8of7CenterCrop),
            color_jitter: Some(ims3_augment::ColorJitterKind::Pil),
            test_at: ims3_eval::TestAt::Final,
            shard: Some("2/3".parse().unwrap()),
            out: p("o"),
        };
        assert!(matches!(parse(to_args("eval", &ev)), Command::Eval(back) if back == ev));

        let ft = finetune::Args {
            dit: p("dit"),
            vae: Some(p("vae")),
            data: Some(p("data")),
            idx: None,
            dataset: "imageidc".into(),
            split: "val".into(),
            out: p("o"),
            train_config: Some(p("t.toml")),
            seed: Some(3),
            batch: Some(2),
            epochs: Some(1),
            steps: Some(10),
            lr: Some(0.5),
            dtype: Some(ims3_dit::Precision::Bf16),
            micro_batches: Some(2),
            no_im: true,
            no_minimax: true,
            folder_index_labels: true,
            heads: Some(2),
            image_size: 64,
            stop_after: Some(1),
        };
        assert!(matches!(parse(to_args("finetune", &ft)), Command::Finetune(back) if back == ft));
    }
}
