//! The control socket: one line command, one line answer, per line a client sends.
//!
//! | command | answer |
//! | --- | --- |
//! | `drop-unsynced` | `ok <files> <bytes>`: power loss; the files and bytes of data dropped (uncommitted directory operations are undone too, and counted on stderr) |
//! | `stats` | `ok <files> <bytes> <written-back files> <directory operations>`: what is unsynced now, how many files the cap wrote back so far, and how many directory operations power loss would undo |
//! | `fail-writes on` / `fail-writes off` | `ok`: writes, creates, size changes and fsyncs fail with EIO while on |
//! | anything else | `error unknown command: <line>` |

use std::sync::Arc;

use crate::fs::Shared;

/// The answer to one command line (without its newline).
pub fn answer(shared: &Shared, line: &str) -> String {
    match line.trim() {
        "drop-unsynced" => {
            let dropped = shared.drop_unsynced();
            format!("ok {} {}", dropped.files, dropped.bytes)
        }
        "stats" => {
            let unsynced = shared.unsynced();
            format!(
                "ok {} {} {} {}",
                unsynced.files,
                unsynced.bytes,
                shared.written_back_files(),
                shared.uncommitted_directory_operations()
            )
        }
        "fail-writes on" => {
            shared.set_fail_writes(true);
            "ok".to_string()
        }
        "fail-writes off" => {
            shared.set_fail_writes(false);
            "ok".to_string()
        }
        other => format!("error unknown command: {other}"),
    }
}

/// Serves `listener` until the task is dropped; each connection may send many lines.
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = format!("{}\n", answer(&shared, &line));
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}
