//! Hostile request frames: truncated headers and bodies, unknown APIs and versions, lengths and
//! counts that lie, over-long varints and a million tagged fields. Each closes its connection
//! only; the same broker process then serves a fresh client, and its peak memory stays bounded.

use runnel_e2e::hostile::{check_survived, framed, header_v1, RssBaseline};
use runnel_e2e::wire::{api_key, expect_close_after, put_i16, put_i32, put_string, record_batch};
use runnel_e2e::wire::{produce_v3, ProducerIdentity};
use runnel_e2e::{Result, TestBroker, TestResult};

/// Metadata (3), for array-count attacks on a second decoder.
const METADATA: i16 = 3;
/// AddPartitionsToTxn (24): a key Kafka defines that Runnel does not serve.
const ADD_PARTITIONS_TO_TXN: i16 = 24;

/// Starts a broker, sends each frame on its own connection expecting a close, then checks the
/// broker survived with bounded memory.
async fn each_closes(what: &str, frames: &[(&str, Vec<u8>)]) -> TestResult {
    let mut broker = TestBroker::start(&[])?;
    let result = async {
        let baseline = RssBaseline::take(&broker)?;
        for (name, frame) in frames {
            expect_close_after(&broker, frame, name)?;
        }
        check_survived(&mut broker, baseline, what).await
    }
    .await;
    broker.check(result)
}

fn no_identity() -> ProducerIdentity {
    ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn produce_frame(version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = header_v1(api_key::PRODUCE, version, 1);
    frame.extend_from_slice(body);
    framed(&frame)
}

/// Header v2 (flexible): header v1 then a tagged-field section given raw.
fn header_v2(api_key: i16, api_version: i16, tagged_fields: &[u8]) -> Vec<u8> {
    let mut frame = header_v1(api_key, api_version, 1);
    frame.extend_from_slice(tagged_fields);
    frame
}

fn put_unsigned_varint(buf: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn valid_produce_body() -> Result<Vec<u8>> {
    let batch = record_batch(&[b"some value"], no_identity(), 1_700_000_000_000);
    produce_v3(1, "hostile", 0, &batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_header_or_body_closes_the_connection() -> TestResult {
    // Header v1 whose client id claims 100 bytes with 2 present.
    let mut short_client_id = Vec::new();
    put_i16(&mut short_client_id, api_key::API_VERSIONS);
    put_i16(&mut short_client_id, 0);
    put_i32(&mut short_client_id, 1);
    put_i16(&mut short_client_id, 100);
    short_client_id.extend_from_slice(b"ab");
    // Header v2 (ApiVersions v3) that ends before its tagged-field count.
    let no_tag_count = header_v1(api_key::API_VERSIONS, 3, 1);
    let body = valid_produce_body()?;
    let half_body: Vec<u8> = body.iter().take(body.len() / 2).copied().collect();
    let all_but_one: Vec<u8> = body.iter().take(body.len() - 1).copied().collect();
    each_closes(
        "truncated headers and bodies",
        &[
            ("client id past the header", framed(&short_client_id)),
            (
                "flexible header without tagged fields",
                framed(&no_tag_count),
            ),
            ("produce body cut in half", produce_frame(3, &half_body)),
            (
                "produce body missing its last byte",
                produce_frame(3, &all_but_one),
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_key_closes_the_connection() -> TestResult {
    let mut undefined = header_v1(999, 0, 1);
    undefined.extend_from_slice(&[0; 8]);
    let mut negative = header_v1(-5, 0, 1);
    negative.extend_from_slice(&[0; 8]);
    let mut unserved = header_v1(ADD_PARTITIONS_TO_TXN, 0, 1);
    unserved.extend_from_slice(&[0; 8]);
    each_closes(
        "unknown api keys",
        &[
            ("api key 999", framed(&undefined)),
            ("api key -5", framed(&negative)),
            ("AddPartitionsToTxn, not served", framed(&unserved)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_outside_the_served_range_closes_the_connection() -> TestResult {
    let body = valid_produce_body()?;
    let mut fetch_v3 = header_v1(api_key::FETCH, 3, 1);
    fetch_v3.extend_from_slice(&[0; 32]);
    each_closes(
        "versions outside the served ranges",
        &[
            ("Produce v2 (below the minimum)", produce_frame(2, &body)),
            ("Produce v99 (above the maximum)", produce_frame(99, &body)),
            ("Produce v-1", produce_frame(-1, &body)),
            ("Fetch v3 (below the minimum)", framed(&fetch_v3)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_count_of_2_pow_31_minus_1_closes_the_connection() -> TestResult {
    // Produce v3: transactional id, acks, timeout, then a topic count with nothing behind it.
    let mut topics = Vec::new();
    put_i16(&mut topics, -1);
    put_i16(&mut topics, 1);
    put_i32(&mut topics, 30_000);
    put_i32(&mut topics, i32::MAX);
    // One topic claiming 2^31 - 1 partitions.
    let mut partitions = topics.clone();
    if let Some(count) = partitions.get_mut(8..12) {
        count.copy_from_slice(&1i32.to_be_bytes());
    }
    put_string(&mut partitions, "hostile");
    put_i32(&mut partitions, i32::MAX);
    // Metadata v1 with 2^31 - 1 topics.
    let mut metadata = header_v1(METADATA, 1, 1);
    put_i32(&mut metadata, i32::MAX);
    // Metadata v9 (flexible): a compact array count of 2^32 - 2 as a varint.
    let mut metadata_flexible = header_v2(METADATA, 9, &[0]);
    put_unsigned_varint(&mut metadata_flexible, u32::MAX);
    each_closes(
        "array counts of 2^31 - 1",
        &[
            ("produce with 2^31-1 topics", produce_frame(3, &topics)),
            (
                "produce with 2^31-1 partitions",
                produce_frame(3, &partitions),
            ),
            ("metadata v1 with 2^31-1 topics", framed(&metadata)),
            ("metadata v9 with 2^32-2 topics", framed(&metadata_flexible)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_or_bytes_length_past_the_frame_closes_the_connection() -> TestResult {
    let mut long_topic = Vec::new();
    put_i16(&mut long_topic, -1);
    put_i16(&mut long_topic, 1);
    put_i32(&mut long_topic, 30_000);
    put_i32(&mut long_topic, 1);
    put_i16(&mut long_topic, i16::MAX);
    long_topic.extend_from_slice(b"hostile");
    let mut long_records = Vec::new();
    put_i16(&mut long_records, -1);
    put_i16(&mut long_records, 1);
    put_i32(&mut long_records, 30_000);
    put_i32(&mut long_records, 1);
    put_string(&mut long_records, "hostile");
    put_i32(&mut long_records, 1);
    put_i32(&mut long_records, 0);
    put_i32(&mut long_records, i32::MAX);
    long_records.extend_from_slice(&[0; 64]);
    // ApiVersions v3: a compact string whose varint length runs past the frame.
    let mut compact = header_v2(api_key::API_VERSIONS, 3, &[0]);
    put_unsigned_varint(&mut compact, 1_000_000);
    compact.extend_from_slice(b"runnel");
    each_closes(
        "lengths past the frame",
        &[
            ("topic name of 32767 bytes", produce_frame(3, &long_topic)),
            ("records of 2^31-1 bytes", produce_frame(3, &long_records)),
            ("compact string of 999999 bytes", framed(&compact)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varint_over_five_bytes_closes_the_connection() -> TestResult {
    // Six bytes for the value 1: continuation bits on the first five. Kafka refuses varints
    // longer than five bytes; reading five and going on would misparse everything after.
    let long_one = [0x81, 0x80, 0x80, 0x80, 0x80, 0x00];
    // ApiVersions v3 body: client software name (compact string), version, tagged fields.
    let mut in_body = header_v2(api_key::API_VERSIONS, 3, &[0]);
    in_body.extend_from_slice(&long_one);
    in_body.extend_from_slice(&[6]);
    in_body.extend_from_slice(b"0.1.0");
    in_body.push(0);
    // The header's tagged-field count itself.
    let mut in_header = header_v2(api_key::API_VERSIONS, 3, &[0x80, 0x80, 0x80, 0x80, 0x80, 0]);
    in_header.extend_from_slice(&[7]);
    in_header.extend_from_slice(b"runnel");
    in_header.extend_from_slice(&[6]);
    in_header.extend_from_slice(b"0.1.0");
    in_header.push(0);
    each_closes(
        "varints over five bytes",
        &[
            ("six-byte varint in an ApiVersions body", framed(&in_body)),
            (
                "six-byte tagged-field count in a header",
                framed(&in_header),
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_tagged_fields_close_the_connection_with_memory_bounded() -> TestResult {
    const FIELDS: u32 = 1_000_000;
    let mut tagged = Vec::new();
    put_unsigned_varint(&mut tagged, FIELDS);
    for tag in 0..FIELDS {
        put_unsigned_varint(&mut tagged, tag);
        put_unsigned_varint(&mut tagged, 0); // empty value
    }
    let mut in_header = header_v2(api_key::API_VERSIONS, 3, &tagged);
    in_header.extend_from_slice(&[7]);
    in_header.extend_from_slice(b"runnel");
    in_header.extend_from_slice(&[6]);
    in_header.extend_from_slice(b"0.1.0");
    in_header.push(0);
    // The same million fields in the body of ApiVersions v3, after its two strings.
    let mut in_body = header_v2(api_key::API_VERSIONS, 3, &[0]);
    in_body.extend_from_slice(&[7]);
    in_body.extend_from_slice(b"runnel");
    in_body.extend_from_slice(&[6]);
    in_body.extend_from_slice(b"0.1.0");
    in_body.extend_from_slice(&tagged);
    each_closes(
        "a million tagged fields",
        &[
            ("a million tagged fields in a header", framed(&in_header)),
            ("a million tagged fields in a body", framed(&in_body)),
        ],
    )
    .await
}
