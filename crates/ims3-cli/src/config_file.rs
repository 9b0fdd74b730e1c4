//! `ims3 --config <file.toml>`: defaults for any subcommand's options from a TOML table per
//! subcommand (keys named as the long options); the command line wins. Also the one TOML
//! parser of the command line, whose errors name the file and line.

use anyhow::{Result, anyhow, ensure};
use clap::CommandFactory;

use crate::Cli;

/// Inserts `--key value` for every key of the `--config` file's table for the chosen
/// subcommand that the command line does not already give.
pub fn with_config_defaults(mut args: Vec<String>) -> Result<Vec<String>> {
    let Some(i) = args.iter().position(|a| a == "--config") else { return Ok(args) };
    let path = args.get(i + 1).cloned().ok_or_else(|| anyhow!("--config needs a file"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow!("{path}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow!("{path}: {}", e.message().trim()))?;
    args.drain(i..i + 2);
    // Subcommand names and aliases, from the parser itself; an alias maps to its name.
    let cli = Cli::command();
    let names: Vec<(String, String)> = cli
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string)).map(move |n| (n, c.get_name().to_string())))
        .collect();
    let canonical = |a: &str| names.iter().find(|(n, _)| n == a).map(|(_, c)| c.clone());
    let Some(sub_at) = args.iter().skip(1).position(|a| canonical(a).is_some()).map(|p| p + 1) else { return Ok(args) };
    let sub = canonical(&args[sub_at]).expect("found above");
    for key in table.keys() {
        ensure!(
            names.iter().any(|(n, c)| n == key && c == key),
            "{path}: table [{key}] is not a subcommand ({})",
            cli.get_subcommands().map(|c| c.get_name()).collect::<Vec<_>>().join(", ")
        );
    }
    let Some(toml::Value::Table(opts)) = table.get(&sub) else { return Ok(args) };
    let mut extra = Vec::new();
    for (k, v) in opts {
        let flag = format!("--{}", k.replace('_', "-"));
        if args.iter().any(|a| a == &flag || a.starts_with(&format!("{flag}="))) {
            continue;
        }
        match v {
            toml::Value::Boolean(true) => extra.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => extra.extend([flag, s.clone()]),
            toml::Value::Array(a) => extra.extend([flag, a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect::<Vec<_>>().join(",")]),
            other => extra.extend([flag, other.to_string()]),
        }
    }
    args.splice(sub_at + 1..sub_at + 1, extra);
    Ok(args)
}

/// Parses a TOML file's text into `T`; an error is one line: `<origin>: line N: <message>`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(0);
        anyhow!("{origin}: line {line}: {}", e.message().trim())
    })
}
