//! Command-line flags. Each flag is a shorthand for a setting (`--listen` is `listen`,
//! `--data-dir` is `data.dir`, …) and `--set NAME=VALUE` reaches any setting; flags override
//! the config file and the environment.

use std::path::PathBuf;

/// Parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// Settings from flags, in order (later wins).
    pub overrides: Vec<(String, String)>,
    /// `--help` was asked for.
    pub help: bool,
}

/// Usage text for `--help` and flag errors.
pub const USAGE: &str = "usage: runnel [--listen HOST:PORT] [--advertise HOST:PORT] [--data-dir DIR] \
[--node-id N] [--config FILE.toml] [--set NAME=VALUE]...
  Starts a Kafka-compatible broker (defaults: listen 0.0.0.0:9092, advertise localhost:9092, data ./data).
  Settings use Kafka's names (see docs/configuration.md); environment RUNNEL_<NAME> also sets them.";

/// A flag error, reported in one line with the usage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// A flag we do not know.
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    /// A flag given without its value.
    #[error("flag `{0}` needs a value")]
    MissingValue(String),
    /// `--set` without `=`.
    #[error("`--set {0}`: expected NAME=VALUE")]
    BadSet(String),
}

impl Cli {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, CliError> {
        let mut cli = Cli::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            if flag == "--help" || flag == "-h" {
                cli.help = true;
                continue;
            }
            let setting = match flag.as_str() {
                "--listen" => Some("listen"),
                "--advertise" => Some("advertise"),
                "--data-dir" => Some("data.dir"),
                "--node-id" => Some("node.id"),
                "--config" | "--set" => None,
                _ => return Err(CliError::UnknownFlag(arg)),
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| CliError::MissingValue(flag.clone()))?,
            };
            match (flag.as_str(), setting) {
                ("--config", _) => cli.config_file = Some(PathBuf::from(value)),
                ("--set", _) => {
                    let (name, value) = value
                        .split_once('=')
                        .ok_or_else(|| CliError::BadSet(value.clone()))?;
                    cli.overrides.push((name.to_string(), value.to_string()));
                }
                (_, Some(name)) => cli.overrides.push((name.to_string(), value)),
                _ => return Err(CliError::UnknownFlag(arg)),
            }
        }
        Ok(cli)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, CliError> {
        Cli::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_become_settings_in_order() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:1",
            "--data-dir=/tmp/x",
            "--set",
            "num.partitions=3",
            "--config",
            "a.toml",
        ])
        .unwrap();
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert_eq!(
            cli.overrides,
            vec![
                ("listen".into(), "127.0.0.1:1".into()),
                ("data.dir".into(), "/tmp/x".into()),
                ("num.partitions".into(), "3".into())
            ]
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        assert_eq!(
            parse(&["--lisen", "x"]),
            Err(CliError::UnknownFlag("--lisen".into()))
        );
        assert_eq!(
            parse(&["--listen"]),
            Err(CliError::MissingValue("--listen".into()))
        );
        assert_eq!(
            parse(&["--set", "novalue"]),
            Err(CliError::BadSet("novalue".into()))
        );
    }
}
