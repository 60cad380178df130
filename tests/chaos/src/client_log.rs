//! [`ClientLog`]: each workload client's librdkafka log, one file per client under the run's
//! `clients/` directory, every line stamped with the history's clock. Producers log the
//! idempotence state machine (`debug=eos`: producer ids, epoch bumps and why), consumers the
//! group protocol (`debug=cgrp`), so an anomaly in the history can be laid beside what the
//! client did at that moment (docs/reliability.md, "Reading a run").

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::ClientContext;

use crate::recorder::Recorder;

/// The directory under the run's output directory that holds the client logs.
pub const CLIENT_LOG_DIR: &str = "clients";

/// One client's log file. Write errors are ignored: the log explains a run, the history is
/// what the checker judges.
pub struct ClientLog {
    recorder: Arc<Recorder>,
    file: Option<Mutex<File>>,
}

impl ClientLog {
    /// Opens (truncates) `<dir>/<name>.log`; without a directory (or if it cannot be created)
    /// the client logs nothing.
    pub fn open(dir: Option<&Path>, name: &str, recorder: Arc<Recorder>) -> ClientLog {
        let file = dir.and_then(|dir| {
            std::fs::create_dir_all(dir).ok()?;
            File::create(dir.join(format!("{name}.log"))).ok()
        });
        ClientLog {
            recorder,
            file: file.map(Mutex::new),
        }
    }

    /// Appends one librdkafka log line.
    pub fn write(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let Some(file) = &self.file else { return };
        let line = format!("{} {level:?} {fac}: {message}\n", self.recorder.now_ms());
        let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
}

/// Turns on librdkafka's `debug` contexts and lets their lines reach the client context (the
/// Rust binding otherwise passes on only what the `log` crate's level allows: errors here).
pub fn enable_debug(config: &mut ClientConfig, contexts: &str) {
    config
        .set("debug", contexts)
        .set_log_level(RDKafkaLogLevel::Debug);
}

/// A producer's context: every client log line goes to its file.
pub struct ProducerLog(pub ClientLog);

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.write(level, fac, log_message);
    }
}

/// Where a run keeps its client logs.
pub fn client_log_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(CLIENT_LOG_DIR)
}
