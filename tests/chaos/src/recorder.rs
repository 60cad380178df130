//! [`Recorder`]: writes the run's [`Event`]s to `history.jsonl` as they happen, flushed at
//! least every [`FLUSH_INTERVAL`] while events come (so a harness killed mid-run still leaves
//! its history up to about a second before), timestamps them, and derives the `Recovered`
//! events: the first acknowledged send after each heal.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use runnel_e2e::Result;

use crate::history::{Event, FaultPhase, Millis};

/// How stale the file may get: a write after this long since the last flush flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The history being written. Shared by every producer, consumer and the fault loop; the
/// time of each event is taken under its lock, so the file is in time order.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    out: BufWriter<File>,
    /// The time of the last heal not yet followed by an acknowledged send.
    unrecovered_heal_ms: Option<Millis>,
    /// The first write error: reported by [`Recorder::finish`].
    error: Option<String>,
    /// Events written.
    events: u64,
    /// When the buffer was last flushed.
    flushed_at: Instant,
}

impl Recorder {
    /// Creates (truncates) `path`; times count from now.
    pub fn create(path: &Path) -> Result<Recorder> {
        Ok(Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                out: BufWriter::new(File::create(path)?),
                unrecovered_heal_ms: None,
                error: None,
                events: 0,
                flushed_at: Instant::now(),
            }),
        })
    }

    /// Milliseconds since the recorder was created.
    pub fn now_ms(&self) -> Millis {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A writer that panicked leaves the history as it was: keep recording.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the event `make` builds from the current time.
    pub fn record(&self, make: impl FnOnce(Millis) -> Event) {
        let mut inner = self.lock();
        let time_ms = self.now_ms();
        let event = make(time_ms);
        if let Event::SendOk { .. } | Event::SendOkOffsetUnknown { .. } = event {
            if let Some(heal_ms) = inner.unrecovered_heal_ms.take() {
                let recovered = Event::Recovered {
                    time_ms,
                    after_ms: time_ms.saturating_sub(heal_ms),
                };
                inner.write(&event);
                inner.write(&recovered);
                return;
            }
        }
        if let Event::Fault {
            phase: FaultPhase::Heal,
            ..
        } = event
        {
            inner.unrecovered_heal_ms = Some(time_ms);
        }
        inner.write(&event);
    }

    /// Flushes the file; the first write error, if any.
    pub fn finish(&self) -> Result<u64> {
        let mut inner = self.lock();
        if let Err(e) = inner.out.flush() {
            inner.error.get_or_insert_with(|| e.to_string());
        }
        match &inner.error {
            Some(e) => Err(format!("writing the history: {e}").into()),
            None => Ok(inner.events),
        }
    }
}

impl Inner {
    fn write(&mut self, event: &Event) {
        let result = serde_json::to_writer(&mut self.out, event)
            .map_err(|e| e.to_string())
            .and_then(|()| self.out.write_all(b"\n").map_err(|e| e.to_string()));
        match result {
            Ok(()) => self.events += 1,
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        if self.flushed_at.elapsed() >= FLUSH_INTERVAL {
            if let Err(e) = self.out.flush() {
                self.error.get_or_insert_with(|| e.to_string());
            }
            self.flushed_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn send_ok(time_ms: Millis, value: &str) -> Event {
        Event::SendOk {
            time_ms,
            producer: 0,
            value: value.to_owned(),
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn the_first_ack_after_a_heal_records_the_recovery() {
        let dir = std::env::temp_dir().join(format!("runnel-chaos-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        recorder.record(|t| send_ok(t, "p0-1"));
        recorder.record(|t| Event::Fault {
            time_ms: t,
            kind: "kill-one".into(),
            target: "1".into(),
            phase: FaultPhase::Heal,
        });
        recorder.record(|t| send_ok(t, "p0-2"));
        recorder.record(|t| send_ok(t, "p0-3"));
        assert_eq!(recorder.finish().unwrap(), 5);
        let events: Vec<Event> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let recovered: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Recovered { .. }))
            .collect();
        assert_eq!(recovered.len(), 1);
        assert!(matches!(events[3], Event::Recovered { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_reach_the_file_without_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        recorder.record(|t| send_ok(t, "p0-1"));
        std::thread::sleep(FLUSH_INTERVAL);
        recorder.record(|t| send_ok(t, "p0-2"));
        // Not finished (a killed harness): both lines are in the file already.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }
}
