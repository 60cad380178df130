//! The `runnel` binary: parse flags, load settings, serve until SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use runnel_broker::cli::Cli;
use runnel_broker::BrokerConfig;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        // Prints the help or version (exit 0) or the error with usage (exit 2).
        Err(error) => error.exit(),
    };
    let config = match BrokerConfig::load(cli.config_file.as_deref(), &cli.overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("runnel: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match runnel_broker::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runnel: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to JSON lines. Neither is a
/// broker setting (they would trip the unknown-setting check under `RUNNEL_`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
