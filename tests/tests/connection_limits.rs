//! Connection admission and idle limits: `max.connections.per.ip`, `max.connections` and
//! `connections.max.idle.ms` close what exceeds them, and the broker keeps serving.

use std::time::Duration;

use runnel_e2e::wire::{api_key, CloseOutcome, RawConnection};
use runnel_e2e::{ensure, ensure_eq, produce_one, producer, Result, TestBroker, TestResult};

const API_VERSIONS_V0: i16 = 0;

/// An ApiVersions v0 round trip: proves the connection is admitted and served.
fn served(connection: &mut RawConnection) -> Result<()> {
    let body = connection.round_trip(api_key::API_VERSIONS, API_VERSIONS_V0, &[])?;
    ensure!(body.len() > 2, "ApiVersions answer of {} bytes", body.len());
    Ok(())
}

async fn still_serves(broker: &TestBroker) -> Result<()> {
    let producer = producer(broker, &[("message.timeout.ms", "20000")])?;
    produce_one(&producer, "alive", None, None, b"still here")
        .await
        .map_err(|e| format!("produce failed: {e}"))?;
    Ok(())
}

fn limit_args(name: &str, value: &str) -> Vec<String> {
    vec!["--set".into(), format!("{name}={value}")]
}

async fn connections_beyond_the_limit_are_closed(setting: &str) -> TestResult {
    let args = limit_args(setting, "3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = TestBroker::start(&args)?;
    let result = async {
        let timeout = Duration::from_secs(10);
        let mut admitted = Vec::new();
        for _ in 0..3 {
            let mut connection = RawConnection::connect(&broker, timeout)?;
            served(&mut connection)?;
            admitted.push(connection);
        }
        let mut refused = RawConnection::connect(&broker, timeout)?;
        ensure_eq!(
            refused.wait_closed(timeout)?,
            CloseOutcome::Closed,
            "a 4th connection with {setting}=3"
        );
        // A slot frees when a connection closes; the broker notices the close asynchronously,
        // so retry until a new connection is admitted.
        drop(admitted.pop());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut connection = RawConnection::connect(&broker, timeout)?;
            match served(&mut connection) {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(format!("no connection admitted after one closed: {e}").into())
                }
            }
        }
        drop(admitted);
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_closes_extra_connections() -> TestResult {
    connections_beyond_the_limit_are_closed("max.connections.per.ip").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_limit_closes_extra_connections() -> TestResult {
    connections_beyond_the_limit_are_closed("max.connections").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() -> TestResult {
    let broker = TestBroker::start(&["--set", "connections.max.idle.ms=500"])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        served(&mut connection)?;
        ensure_eq!(
            connection.wait_closed(Duration::from_secs(20))?,
            CloseOutcome::Closed,
            "an idle connection after connections.max.idle.ms"
        );
        still_serves(&broker).await
    }
    .await;
    broker.check(result)
}

/// A client dripping a request one byte at a time never completes it within the idle limit:
/// the broker closes it instead of holding the connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_request_is_closed() -> TestResult {
    let broker = TestBroker::start(&["--set", "connections.max.idle.ms=1000"])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        // A 1 KiB ApiVersions frame, sent one byte every 100 ms: it would take 100 s.
        let mut frame = 1024i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
        frame.resize(4 + 1024, 0);
        let mut closed = false;
        for byte in frame.chunks(1).take(300) {
            connection.send_raw(byte)?;
            if matches!(
                connection.wait_closed(Duration::from_millis(100)),
                Ok(CloseOutcome::Closed)
            ) {
                closed = true;
                break;
            }
        }
        ensure!(
            closed,
            "the broker kept a slow-drip connection open for 30 s"
        );
        still_serves(&broker).await
    }
    .await;
    broker.check(result)
}
