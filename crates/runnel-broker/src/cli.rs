//! Command-line flags, parsed by `clap`. Each flag is a shorthand for a setting (`--listen` is
//! `listen`, itself short for `listeners=PLAINTEXT://…`; `--data-dir` is `data.dir`, …) and `--set NAME=VALUE` reaches any setting; flags
//! override the config file and the environment, and among flags the later one wins.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

/// Parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// Settings from flags, in command-line order (later wins).
    pub overrides: Vec<(String, String)>,
}

/// The flags that stand for one setting each: (flag id and long name, setting, value name, help).
const SHORTHANDS: [(&str, &str, &str, &str); 4] = [
    (
        "listen",
        "listen",
        "HOST:PORT",
        "Address to accept clients on: listeners=PLAINTEXT://HOST:PORT [default: 0.0.0.0:9092]",
    ),
    (
        "advertise",
        "advertise",
        "HOST:PORT",
        "Address clients are told to connect to: advertised.listeners=PLAINTEXT://HOST:PORT \
         [default: the listener, 0.0.0.0 read as localhost]",
    ),
    (
        "data-dir",
        "data.dir",
        "DIR",
        "Directory holding the logs [default: ./data]",
    ),
    (
        "node-id",
        "node.id",
        "N",
        "This node's id: broker id and quorum voter id [default: 0]",
    ),
];

/// The `runnel` command: its flags, help and version.
pub fn command() -> Command {
    let mut command = Command::new("runnel")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Kafka-compatible event-streaming broker")
        .after_help(
            "Settings use Kafka's names (see docs/configuration.md); the environment \
             RUNNEL_<NAME> also sets them (RUNNEL_NUM_PARTITIONS=3).",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE.toml")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Settings file (TOML, Kafka names)"),
        )
        .arg(
            Arg::new("set")
                .long("set")
                .value_name("NAME=VALUE")
                .action(ArgAction::Append)
                .value_parser(parse_setting)
                .help("Any setting by its Kafka name, e.g. --set num.partitions=3 (repeatable)"),
        );
    for (id, _, value_name, help) in SHORTHANDS {
        command = command.arg(
            Arg::new(id)
                .long(id)
                .value_name(value_name)
                .action(ArgAction::Append)
                .help(help),
        );
    }
    command
}

/// `--set` values: `NAME=VALUE`.
fn parse_setting(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("`{value}`: expected NAME=VALUE"))
}

impl Cli {
    /// Parses a whole command line (program name first). Errors are clap's, including the
    /// `--help` and `--version` "errors" whose `exit()` prints and exits 0.
    pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        command().try_get_matches_from(args).map(Cli::from_matches)
    }

    fn from_matches(matches: ArgMatches) -> Cli {
        // Flags become settings in the order they were given, so that `--listen a --set
        // listen=b` means b and `--set listen=b --listen a` means a.
        let mut ordered: Vec<(usize, String, String)> = Vec::new();
        for (id, setting, _, _) in SHORTHANDS {
            let indices = matches.indices_of(id).into_iter().flatten();
            let values = matches.get_many::<String>(id).into_iter().flatten();
            for (index, value) in indices.zip(values) {
                ordered.push((index, setting.to_string(), value.clone()));
            }
        }
        let indices = matches.indices_of("set").into_iter().flatten();
        let values = matches
            .get_many::<(String, String)>("set")
            .into_iter()
            .flatten();
        for (index, (name, value)) in indices.zip(values) {
            ordered.push((index, name.clone(), value.clone()));
        }
        ordered.sort_by_key(|(index, _, _)| *index);
        Cli {
            config_file: matches.get_one::<PathBuf>("config").cloned(),
            overrides: ordered
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("runnel").chain(args.iter().copied()))
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
            "--set",
            "listen=127.0.0.1:2",
            "--node-id",
            "4",
        ])
        .unwrap();
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert_eq!(
            cli.overrides,
            vec![
                ("listen".into(), "127.0.0.1:1".into()),
                ("data.dir".into(), "/tmp/x".into()),
                ("num.partitions".into(), "3".into()),
                ("listen".into(), "127.0.0.1:2".into()),
                ("node.id".into(), "4".into()),
            ]
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--lisen", "x"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["--listen"]).unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse(&["--set", "novalue"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn help_and_version_are_answered() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--version"]).unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        command().debug_assert();
    }
}
