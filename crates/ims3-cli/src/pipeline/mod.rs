//! Recipes end to end: typed recipe settings (`recipe.rs`), the one stage runner (`runner.rs`:
//! markers, `--from`, parallel workers, timings, manifest), the two recipe kinds (`subset.rs`:
//! the paper's ImageNet-subset pipeline; `ablation.rs`: the CPU job with its ablations and
//! feature measures) and the results writer (`report.rs`). Stages are child processes of this
//! binary whose command lines are built from the subcommands' typed `Args`.

pub mod ablation;
pub mod recipe;
pub mod report;
pub mod runner;
pub mod subset;
