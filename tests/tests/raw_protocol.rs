//! Raw TCP: malformed frames close only their connection, and ApiVersions answers old and
//! unknown versions the way clients expect.

use std::time::Duration;

use runnel_e2e::wire::{
    api_key, api_versions_v3_body, expect_close_after, parse_api_versions_v0, ApiVersionRange,
    RawConnection,
};
use runnel_e2e::{ensure, ensure_eq, produce_one, producer, Result, TestBroker, TestResult};

/// After a bad connection the broker still serves a real client.
async fn still_serves(broker: &TestBroker, what: &str) -> Result<()> {
    let producer = producer(broker, &[("message.timeout.ms", "20000")])?;
    produce_one(&producer, "alive", None, None, what.as_bytes())
        .await
        .map_err(|e| format!("produce after {what} failed: {e}"))?;
    Ok(())
}

async fn bad_frame_closes_connection(bytes: &[u8], what: &str) -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        expect_close_after(&broker, bytes, what)?;
        still_serves(&broker, what).await
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_frame_size_closes_connection() -> TestResult {
    bad_frame_closes_connection(&(-1i32).to_be_bytes(), "frame size -1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_too_short_for_a_header_closes_connection() -> TestResult {
    let mut bytes = 2i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 18]);
    bad_frame_closes_connection(&bytes, "frame size 2").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_connection() -> TestResult {
    let mut bytes = (100 * 1024 * 1024 + 1i32).to_be_bytes().to_vec();
    // A few bytes of the promised body; the broker must not wait for (or allocate) the rest.
    bytes.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1]);
    bad_frame_closes_connection(&bytes, "frame size 100 MiB + 1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_closes_connection() -> TestResult {
    bad_frame_closes_connection(b"GET / HTTP/1.1\r\n\r\n", "an HTTP request").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bad_connections_leave_the_broker_serving() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let frames: [&[u8]; 3] = [
            &(-1i32).to_be_bytes(),
            b"GET / HTTP/1.1\r\n\r\n",
            &[0, 0, 0, 2, 0, 18],
        ];
        for round in 0..50 {
            for frame in frames {
                expect_close_after(&broker, frame, &format!("bad frame in round {round}"))?;
            }
        }
        still_serves(&broker, "150 bad connections").await
    }
    .await;
    broker.check(result)
}

fn find(ranges: &[ApiVersionRange], key: i16) -> Option<ApiVersionRange> {
    ranges.iter().copied().find(|r| r.api_key == key)
}

fn check_api_list(ranges: &[ApiVersionRange]) -> Result<()> {
    let produce = find(ranges, api_key::PRODUCE).ok_or("Produce (0) not listed")?;
    ensure!(produce.max >= 3, "Produce max version {} < 3", produce.max);
    let fetch = find(ranges, api_key::FETCH).ok_or("Fetch (1) not listed")?;
    ensure!(fetch.max >= 4, "Fetch max version {} < 4", fetch.max);
    let api_versions = find(ranges, api_key::API_VERSIONS).ok_or("ApiVersions (18) not listed")?;
    ensure!(
        api_versions.min == 0 && api_versions.max >= 3,
        "ApiVersions listed as {api_versions:?}, expected 0..=3 or more"
    );
    for range in ranges {
        ensure!(
            0 <= range.min && range.min <= range.max,
            "nonsense version range {range:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_v0_lists_supported_apis() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        let body = connection.round_trip(api_key::API_VERSIONS, 0, &[])?;
        let (error_code, ranges) = parse_api_versions_v0(&body)?;
        ensure_eq!(error_code, 0, "ApiVersions v0 error code");
        check_api_list(&ranges)?;
        // The connection stays usable.
        let body = connection.round_trip(api_key::API_VERSIONS, 0, &[])?;
        ensure_eq!(
            parse_api_versions_v0(&body)?.1,
            ranges,
            "second ApiVersions v0 response"
        );
        Ok(())
    }
    .await;
    broker.check(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_unknown_version_answers_v0_with_unsupported_version() -> TestResult {
    let broker = TestBroker::start(&[])?;
    let result = async {
        let mut connection = RawConnection::connect(&broker, Duration::from_secs(10))?;
        // What a client newer than the broker sends: a flexible header and a v3-style body.
        let correlation_id = connection.send_flexible_request(
            api_key::API_VERSIONS,
            127,
            &api_versions_v3_body(),
        )?;
        let body = connection.read_response(correlation_id)?;
        let (error_code, ranges) = parse_api_versions_v0(&body)?;
        ensure_eq!(
            error_code,
            35,
            "ApiVersions v127 error code (UNSUPPORTED_VERSION)"
        );
        check_api_list(&ranges)?;
        Ok(())
    }
    .await;
    broker.check(result)
}
