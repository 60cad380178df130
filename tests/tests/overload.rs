//! Overload: ten thousand idle connections, and a client that pipelines ten thousand requests
//! without ever reading a response. The broker admits up to `max.connections`, refuses the rest
//! cleanly, stops reading a connection whose responses are not taken, closes it after
//! `connections.max.idle.ms`, keeps serving everyone else, and its memory stays bounded. A large
//! Fetch response holds its records once (read from the log, written from that buffer).

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use runnel_e2e::hostile::{
    check_survived, fetch_v4_up_to, framed, header_v1, parse_fetch_v4, RssBaseline,
};
use runnel_e2e::wire::{api_key, put_i32, put_string, CloseOutcome, RawConnection};
use runnel_e2e::{
    create_topic, ensure, ensure_eq, produce_all, producer, Result, TestBroker, TestResult,
    WAIT_TIMEOUT,
};

const IDLE_CONNECTIONS: usize = 10_000;
const PIPELINED_REQUESTS: usize = 10_000;
const METADATA: i16 = 3;
const MIB: u64 = 1024 * 1024;

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn open_files_limit() -> Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or("no 'Max open files' in /proc/self/limits")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .ok_or("malformed 'Max open files' line")?;
    Ok(if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse()?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_served_then_refused_with_bounded_memory() -> TestResult {
    let limit = open_files_limit()?;
    if limit < (IDLE_CONNECTIONS + 500) as u64 {
        return Err(runnel_e2e::Failure::from(runnel_e2e::Error::from(format!(
            "this test needs {} open files (ulimit -n), the limit is {limit}",
            IDLE_CONNECTIONS + 500
        ))));
    }
    let mut broker = TestBroker::start(&["--set", "max.connections=10000"])?;
    let result = async {
        let baseline = RssBaseline::take(&broker)?;
        let timeout = Duration::from_secs(30);
        let mut connections = Vec::with_capacity(IDLE_CONNECTIONS);
        for _ in 0..IDLE_CONNECTIONS {
            connections.push(RawConnection::connect(&broker, timeout)?);
        }
        // Every one of them is admitted and served, not merely queued by the kernel.
        for (index, connection) in connections.iter_mut().enumerate() {
            let body = connection
                .round_trip(api_key::API_VERSIONS, 0, &[])
                .map_err(|e| format!("connection #{index} of {IDLE_CONNECTIONS}: {e}"))?;
            ensure!(
                body.len() > 2,
                "connection #{index}: short ApiVersions answer"
            );
        }
        // One past max.connections is closed at once.
        let mut refused = RawConnection::connect(&broker, timeout)?;
        ensure_eq!(
            refused.wait_closed(timeout)?,
            CloseOutcome::Closed,
            "connection #{} with max.connections=10000",
            IDLE_CONNECTIONS + 1
        );
        let peak = broker.peak_rss_bytes()?;
        ensure!(
            peak < 100 * MIB,
            "broker peak RSS with {IDLE_CONNECTIONS} connections is {} KiB, limit 100 MiB",
            peak / 1024
        );
        // Free a few slots for the real clients of the survival check.
        connections.truncate(IDLE_CONNECTIONS - 50);
        // Idle connections hold no read buffer, so they also fit the hostile-input bound.
        check_survived(&mut broker, baseline, "10,000 idle connections").await?;
        drop(connections);
        Ok(())
    }
    .await;
    broker.check(result)
}

/// Metadata v1 request frame for `topic`.
fn metadata_v1(correlation_id: i32, topic: &str) -> Vec<u8> {
    let mut frame = header_v1(METADATA, 1, correlation_id);
    put_i32(&mut frame, 1);
    put_string(&mut frame, topic);
    framed(&frame)
}

/// Keeps writing `probe` to a connection whose responses are never read until the broker
/// closes it (after `connections.max.idle.ms`); errors if it is still open after
/// [`WAIT_TIMEOUT`].
async fn wait_until_cut_off(stream: &mut TcpStream, probe: &[u8]) -> Result<()> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        match write_until_stalled(stream, probe) {
            Err(_) => return Ok(()),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => {
                return Err(format!(
                    "the broker kept a connection that never reads open for {WAIT_TIMEOUT:?}"
                )
                .into())
            }
        }
    }
}

/// Writes as much of `bytes` as the socket takes. Returns `Ok(true)` if all was written,
/// `Ok(false)` if the write stalled (the broker stopped reading), and an error if the broker
/// closed the connection.
fn write_until_stalled(stream: &mut TcpStream, bytes: &[u8]) -> Result<bool> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match stream.write(rest) {
            Ok(0) => return Err("connection closed while writing".into()),
            Ok(written) => rest = rest.get(written..).unwrap_or_default(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_others_are_served() -> TestResult {
    let mut broker = TestBroker::start(&["--set", "connections.max.idle.ms=5000"])?;
    let result = async {
        // Large responses: 10,000 of them are far more than socket buffers hold.
        let topic = "wide";
        create_topic(&broker, topic, 100).await?;
        let baseline = RssBaseline::take(&broker)?;
        let mut stream = TcpStream::connect(broker.addr())?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut requests = Vec::new();
        for correlation_id in 0..PIPELINED_REQUESTS {
            requests.extend_from_slice(&metadata_v1(correlation_id as i32, topic));
        }
        // The writes stall once the broker stops reading this socket, or all go through.
        write_until_stalled(&mut stream, &requests)?;
        // Meanwhile everyone else is served.
        check_survived(&mut broker, baseline, "a client pipelining without reading").await?;
        // The broker cannot hand over its responses, so it closes the connection after
        // connections.max.idle.ms: writes then fail.
        wait_until_cut_off(&mut stream, &metadata_v1(0, topic)).await?;
        drop(stream);
        check_survived(&mut broker, baseline, "closing the client that never read").await
    }
    .await;
    broker.check(result)
}

/// Creates `topic` with one partition holding `records` records of `record_bytes` each.
async fn fill_one_partition(
    broker: &TestBroker,
    topic: &str,
    records: usize,
    record_bytes: usize,
) -> Result<()> {
    create_topic(broker, topic, 1).await?;
    let producer = producer(broker, &[])?;
    let records: Vec<_> = (0..records)
        .map(|i| (None, vec![(i % 251) as u8; record_bytes]))
        .collect();
    produce_all(&producer, topic, Some(0), &records).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_large_fetches_that_are_never_read_hold_bounded_memory() -> TestResult {
    const RECORD_BYTES: usize = 128 * 1024;
    const RECORDS: usize = 64; // 8 MiB in the partition
    const FETCHES: usize = 300;
    let mut broker = TestBroker::start(&["--set", "connections.max.idle.ms=5000"])?;
    let result = async {
        let topic = "heavy";
        fill_one_partition(&broker, topic, RECORDS, RECORD_BYTES).await?;
        let baseline = RssBaseline::take(&broker)?;
        // Every fetch asks for the whole partition: each response is about 8 MiB, so 300
        // pipelined responses (the count alone allows 2048) would be 2.4 GB if only counted.
        let whole = i32::try_from(RECORDS * RECORD_BYTES * 2)?;
        let fetch = |correlation_id: i32| {
            let mut frame = header_v1(api_key::FETCH, 4, correlation_id);
            frame.extend_from_slice(&fetch_v4_up_to(-1, topic, 0, 0, whole));
            framed(&frame)
        };
        let requests: Vec<u8> = (0..FETCHES as i32).flat_map(fetch).collect();
        let mut stream = TcpStream::connect(broker.addr())?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        write_until_stalled(&mut stream, &requests)?;
        check_survived(&mut broker, baseline, "pipelined large fetches never read").await?;
        wait_until_cut_off(&mut stream, &fetch(0)).await?;
        drop(stream);
        check_survived(&mut broker, baseline, "closing the client that never read").await
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fetch_response_holds_its_records_once() -> TestResult {
    const RECORD_BYTES: usize = 256 * 1024;
    const RECORDS: usize = 160; // 40 MiB in the partition
    let broker = TestBroker::start(&[])?;
    let result = async {
        let topic = "bulk";
        fill_one_partition(&broker, topic, RECORDS, RECORD_BYTES).await?;
        let baseline = RssBaseline::reset(&broker)?;
        let whole = i32::try_from(RECORDS * RECORD_BYTES * 2)?;
        let mut connection = RawConnection::connect(&broker, WAIT_TIMEOUT)?;
        let body =
            connection.round_trip(api_key::FETCH, 4, &fetch_v4_up_to(-1, topic, 0, 0, whole))?;
        let partitions = parse_fetch_v4(&body)?;
        let records_bytes: usize = partitions.iter().map(|p| p.records_bytes).sum();
        ensure!(
            records_bytes >= RECORDS * RECORD_BYTES,
            "fetched {records_bytes} bytes of records, expected the whole partition"
        );
        // The records are read from the log into one buffer and written from it: the response
        // costs about its own size once, not twice (read buffer plus an encoded copy).
        let limit = u64::try_from(records_bytes)? * 3 / 2;
        baseline.check_growth(&broker, limit, "one fetch of the whole 40 MiB partition")
    }
    .await;
    broker.check(result)
}
