//! Writes the committed seed corpora, `fuzz/corpus/<target>/`: a few small valid inputs per
//! target in each target's input layout (see the targets' module docs), so the fuzzer starts
//! past the first checks. Run from the repository root:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//! ```

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use runnel_broker::handlers::HANDLERS;
use runnel_protocol::batch_builder::{build_batch, NewRecord};
use runnel_protocol::compression::{self, Compression};
use runnel_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use runnel_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use runnel_protocol::kafka_protocol::messages::{
    ApiKey, FetchRequest, ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use runnel_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use runnel_storage::{set_base_offset, LogConfig, PartitionLog};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    frame_splitter(&corpus.join("frame_splitter"))?;
    request_decode(&corpus.join("request_decode"))?;
    record_batch(&corpus.join("record_batch"))?;
    segment_recovery(&corpus.join("segment_recovery"))?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `max byte | chunk count | chunk sizes | stream`.
fn frame_splitter(dir: &Path) -> Result<()> {
    let two_frames = [framed(&[1; 12]), framed(&[2; 30])].concat();
    let seeds: [(&str, Vec<u8>); 4] = [
        (
            "two_frames_bytewise",
            [&[60u8, 0, 1][..], &two_frames].concat(),
        ),
        (
            "two_frames_uneven",
            [&[60u8, 2, 3, 7, 39][..], &two_frames].concat(),
        ),
        ("too_large", [&[0u8, 0, 5][..], &framed(&[3; 40])].concat()),
        (
            "negative_size",
            [&[20u8, 0, 2][..], &[0xff, 0xff, 0xff, 0xf0, 0, 0]].concat(),
        ),
    ];
    for (name, bytes) in seeds {
        write(dir, name, &bytes)?;
    }
    Ok(())
}

fn record(key: &[u8], value: &[u8]) -> NewRecord {
    NewRecord {
        key: Some(key.to_vec()),
        value: Some(value.to_vec()),
        headers: vec![(b"h".to_vec(), Some(b"v".to_vec()))],
    }
}

fn sample_batch() -> Result<Bytes> {
    build_batch(
        &[record(b"k0", b"first"), record(b"k1", b"second")],
        1_700_000_000_000,
    )
    .ok_or_else(|| "build_batch".into())
}

/// `row | version | mode | body` (mode 0: the target adds the header), and two raw frames.
fn request_decode(dir: &Path) -> Result<()> {
    let topic = TopicName(StrBytes::from_static_str("seed-topic"));
    for (row, handler) in HANDLERS.iter().enumerate() {
        let version = handler.max_version;
        let request = match handler.api_key {
            ApiKey::Produce => RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(sample_batch()?))])]),
            ),
            ApiKey::Fetch => RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_wait_ms(100)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic_id(uuid_like())
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)])]),
            ),
            other => match default_request(other) {
                Some(request) => request,
                None => continue,
            },
        };
        let mut body = BytesMut::new();
        if request.encode(&mut body, version).is_err() {
            eprintln!(
                "skipping {:?} v{version}: default body does not encode",
                handler.api_key
            );
            continue;
        }
        let span = (handler.max_version - handler.min_version) as u8;
        let seed = [&[row as u8, span, 0][..], &body].concat();
        write(dir, &format!("{:?}_v{version}", handler.api_key), &seed)?;
    }
    // Raw mode: the whole frame, header included: ApiVersions v3 (flexible header) and v0.
    for version in [0i16, 3] {
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("seed")))
            .encode(
                &mut frame,
                ApiKey::ApiVersions.request_header_version(version),
            )?;
        default_request(ApiKey::ApiVersions)
            .ok_or("ApiVersions")?
            .encode(&mut frame, version)?;
        write(
            dir,
            &format!("raw_ApiVersions_v{version}"),
            &[&[0u8, 0, 1][..], &frame].concat(),
        )?;
    }
    Ok(())
}

/// A fixed, made-up topic id (Fetch v13+ names topics by id).
fn uuid_like() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
}

/// A default request body for `api_key`.
fn default_request(api_key: ApiKey) -> Option<RequestKind> {
    use runnel_protocol::kafka_protocol::messages as m;
    Some(match api_key {
        ApiKey::ListOffsets => RequestKind::ListOffsets(m::ListOffsetsRequest::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(m::DeleteRecordsRequest::default()),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(m::DescribeConfigsRequest::default())
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(m::AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(m::IncrementalAlterConfigsRequest::default())
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(m::CreatePartitionsRequest::default())
        }
        ApiKey::Metadata => RequestKind::Metadata(m::MetadataRequest::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(m::OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(m::OffsetFetchRequest::default()),
        ApiKey::FindCoordinator => {
            RequestKind::FindCoordinator(m::FindCoordinatorRequest::default())
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(m::JoinGroupRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(m::HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(m::LeaveGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(m::SyncGroupRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(m::DescribeGroupsRequest::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(m::ListGroupsRequest::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            m::ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("seed"))
                .with_client_software_version(StrBytes::from_static_str("1.0")),
        ),
        ApiKey::CreateTopics => RequestKind::CreateTopics(m::CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(m::DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(m::InitProducerIdRequest::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(m::DeleteGroupsRequest::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(m::OffsetDeleteRequest::default()),
        _ => return None,
    })
}

/// `mode | payload`: one batch per codec (CRC as built), and two batches back to back.
fn record_batch(dir: &Path) -> Result<()> {
    let plain = sample_batch()?;
    write(dir, "none", &[&[0u8][..], &plain].concat())?;
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        write(
            dir,
            codec.name(),
            &[&[0u8][..], &recompress(&plain, codec)?].concat(),
        )?;
    }
    write(dir, "two_batches", &[&[0u8][..], &plain, &plain].concat())?;
    Ok(())
}

/// `batch` (uncompressed, from `build_batch`) with its records compressed with `codec`.
fn recompress(batch: &[u8], codec: Compression) -> Result<Vec<u8>> {
    let (header, records) = batch.split_at(61);
    let section = compression::compress(codec, records)?;
    let mut out = BytesMut::from(header);
    out.put_slice(&section);
    let batch_length = i32::try_from(out.len() - 12)?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | codec.attribute_bits();
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.to_vec())
}

/// `flags | second base | sections`: real partition directories written by `PartitionLog`,
/// one with a second segment and its checkpoint, and a log with offsets assigned by hand.
fn segment_recovery(dir: &Path) -> Result<()> {
    let section = |bytes: &[u8]| -> Result<Vec<u8>> {
        let length = u8::try_from(bytes.len()).map_err(|_| "section over 254 bytes")?;
        Ok([&[length][..], bytes].concat())
    };
    let batch = sample_batch()?;
    let mut two = batch.to_vec();
    let mut second = batch.to_vec();
    set_base_offset(&mut second, 2).map_err(|e| e.to_string())?;
    two.extend_from_slice(&second);

    // Just a log of two batches (offsets 0-1, 2-3); no other file.
    let empty = section(&[])?;
    let plain = [
        &[0u8, 0][..],
        &empty,
        &empty,
        &empty,
        &empty,
        &empty,
        &empty,
        &[255],
        &two,
    ]
    .concat();
    write(dir, "log_only", &plain)?;

    // The same files as a real `PartitionLog` leaves them after appends and a clean close.
    let temp = tempfile::tempdir()?;
    let config = LogConfig {
        segment_bytes: 2048,
        segment_ms: i64::MAX,
        index_interval_bytes: 128,
        segment_index_bytes: 256,
    };
    let log = PartitionLog::open(temp.path(), config)?;
    for _ in 0..2 {
        log.append(&batch)?;
    }
    log.close()?;
    drop(log);
    let read = |name: &str| std::fs::read(temp.path().join(name)).unwrap_or_default();
    let checkpoint = read("recovery-point-offset-checkpoint");
    // The payload between the 6-byte head and the 4-byte CRC: the 24-byte full form.
    let checkpoint_fields = checkpoint.get(6..30).ok_or("checkpoint layout")?;
    let closed = [
        &[0b0000_0111u8, 0][..],
        &section(&read("00000000000000000000.index"))?,
        &section(&read("00000000000000000000.timeindex"))?,
        &section(checkpoint_fields)?,
        &empty,
        &empty,
        &empty,
        &[255],
        &read("00000000000000000000.log"),
    ]
    .concat();
    write(dir, "closed_log", &closed)?;

    // Two segments (0 and 4), the compact checkpoint naming the second at position 0.
    let two_segments = [
        &[0b0100_0100u8, 3][..],
        &empty,
        &empty,
        &section(&[0, 4, 1, 0, 0])?,
        &empty,
        &empty,
        &section(&batch_at(&batch, 4)?)?,
        &[255],
        &two,
    ]
    .concat();
    write(dir, "two_segments", &two_segments)?;
    Ok(())
}

fn batch_at(batch: &[u8], base_offset: i64) -> Result<Vec<u8>> {
    let mut out = batch.to_vec();
    set_base_offset(&mut out, base_offset).map_err(|e| e.to_string())?;
    Ok(out)
}
