//! One module per subcommand: its clap `Args` (typed choices, parsed once) and a `run` that
//! calls the libraries (`reproduce` is `crate::pipeline`). The arguments of the commands the
//! recipe pipeline runs as child processes (`finetune`, `sample`, `select`, `eval`) also
//! serialise back to a command line (`crate::args::to_args`).

pub mod convert;
pub mod drift;
pub mod eval;
pub mod fetch;
pub mod finetune;
pub mod info;
pub mod pretrain;
pub mod sample;
pub mod select;
pub mod train_encoder;
pub mod train_vae;

/// This process's command line, as recorded in outputs.
pub fn command_line() -> Vec<String> {
    std::env::args().collect()
}
