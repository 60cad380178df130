//! Kafka's record schemas for `__consumer_offsets`, so that the topic reads the same as a Kafka
//! broker's: keys OffsetCommitKey (versions 0–1) and GroupMetadataKey (version 2), values
//! OffsetCommitValue (written as v3, read v0–3) and GroupMetadataValue (written as v3, read
//! v0–3). A null value is a tombstone. All integers big-endian; strings with an i16 length,
//! nullable ones with -1; bytes with an i32 length.

use bytes::{BufMut, Bytes, BytesMut};

use super::coordinator::{CommittedOffset, DescribedGroup, DescribedMember, GroupState};

/// Key versions 0 and 1 are offset commits; 2 is group metadata.
const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A decoded `__consumer_offsets` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OffsetsKey {
    /// A committed offset of (group, topic, partition).
    OffsetCommit {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A group's metadata.
    GroupMetadata {
        /// Group id.
        group: String,
    },
}

impl OffsetsKey {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            OffsetsKey::OffsetCommit { group, .. } | OffsetsKey::GroupMetadata { group } => group,
        }
    }
}

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("__consumer_offsets record: {0}")]
pub struct RecordFormatError(pub String);

/// Encodes an OffsetCommitKey.
pub fn offset_commit_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.to_vec()
}

/// Encodes a GroupMetadataKey.
pub fn group_metadata_key(group: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut buf, group);
    buf.to_vec()
}

/// Encodes an OffsetCommitValue v3.
pub fn offset_commit_value(offset: &CommittedOffset) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
    buf.put_i64(offset.offset);
    buf.put_i32(offset.leader_epoch);
    put_string(&mut buf, &offset.metadata);
    buf.put_i64(offset.commit_timestamp_ms);
    buf.to_vec()
}

/// Encodes a GroupMetadataValue v3.
pub fn group_metadata_value(group: &DescribedGroup) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut buf, &group.protocol_type);
    buf.put_i32(group.generation_id);
    put_nullable_string(
        &mut buf,
        Some(group.protocol_name.as_str()).filter(|p| !p.is_empty()),
    );
    put_nullable_string(&mut buf, group.leader.as_deref());
    buf.put_i64(group.state_timestamp_ms);
    buf.put_i32(i32::try_from(group.members.len()).unwrap_or(i32::MAX));
    for member in &group.members {
        put_string(&mut buf, &member.member_id);
        put_nullable_string(&mut buf, member.group_instance_id.as_deref());
        put_string(&mut buf, &member.client_id);
        put_string(&mut buf, &member.client_host);
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.metadata);
        put_bytes(&mut buf, &member.assignment);
    }
    buf.to_vec()
}

/// Decodes a key.
pub fn decode_key(bytes: &[u8]) -> Result<OffsetsKey, RecordFormatError> {
    let mut reader = Reader(bytes);
    match reader.i16()? {
        0 | 1 => Ok(OffsetsKey::OffsetCommit {
            group: reader.string()?,
            topic: reader.string()?,
            partition: reader.i32()?,
        }),
        2 => Ok(OffsetsKey::GroupMetadata {
            group: reader.string()?,
        }),
        version => Err(RecordFormatError(format!("unknown key version {version}"))),
    }
}

/// Decodes an OffsetCommitValue (v0–3).
pub fn decode_offset_commit_value(bytes: &[u8]) -> Result<CommittedOffset, RecordFormatError> {
    let mut reader = Reader(bytes);
    let version = reader.i16()?;
    let offset = reader.i64()?;
    let leader_epoch = if version >= 3 { reader.i32()? } else { -1 };
    let metadata = reader.string()?;
    let commit_timestamp_ms = reader.i64()?;
    if version > 3 {
        return Err(RecordFormatError(format!(
            "OffsetCommitValue version {version} is not supported"
        )));
    }
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Decodes a GroupMetadataValue (v0–3) of `group_id`.
pub fn decode_group_metadata_value(
    group_id: &str,
    bytes: &[u8],
) -> Result<DescribedGroup, RecordFormatError> {
    let mut reader = Reader(bytes);
    let version = reader.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordFormatError(format!(
            "GroupMetadataValue version {version} is not supported"
        )));
    }
    let protocol_type = reader.string()?;
    let generation_id = reader.i32()?;
    let protocol_name = reader.nullable_string()?.unwrap_or_default();
    let leader = reader.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { reader.i64()? } else { -1 };
    let count = reader.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = reader.string()?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string()?
        } else {
            None
        };
        let client_id = reader.string()?;
        let client_host = reader.string()?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(reader.i32()?)
        } else {
            None
        };
        let session_timeout_ms = reader.i32()?;
        members.push(DescribedMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            metadata: reader.bytes()?,
            assignment: reader.bytes()?,
        });
    }
    Ok(DescribedGroup {
        group_id: group_id.to_string(),
        state: if members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        },
        protocol_type,
        protocol_name,
        generation_id,
        leader,
        state_timestamp_ms,
        members,
    })
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(bytes.get(..len).unwrap_or_default());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => buf.put_i16(-1),
        Some(s) => put_string(buf, s),
    }
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
    buf.put_slice(bytes);
}

/// A reader that fails instead of panicking at the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordFormatError> {
        if n > self.0.len() {
            return Err(RecordFormatError("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordFormatError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| RecordFormatError("truncated".into()))
    }

    fn i16(&mut self) -> Result<i16, RecordFormatError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordFormatError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordFormatError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordFormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(usize::try_from(len).unwrap_or(0))?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordFormatError("string is not UTF-8".into()))
    }

    fn string(&mut self) -> Result<String, RecordFormatError> {
        self.nullable_string()?
            .ok_or_else(|| RecordFormatError("null string".into()))
    }

    fn bytes(&mut self) -> Result<Bytes, RecordFormatError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(
            self.take(usize::try_from(len).unwrap_or(0))?,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_round_trips() {
        let key = offset_commit_key("g", "t", 7);
        assert_eq!(
            key,
            [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7],
            "Kafka's OffsetCommitKey v1 layout"
        );
        assert_eq!(
            decode_key(&key).unwrap(),
            OffsetsKey::OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            }
        );
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let encoded = offset_commit_value(&value);
        assert_eq!(&encoded[..2], &[0, 3]);
        assert_eq!(decode_offset_commit_value(&encoded).unwrap(), value);
    }

    #[test]
    fn group_metadata_round_trips() {
        let group = DescribedGroup {
            group_id: "g".into(),
            state: GroupState::Stable,
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            generation_id: 3,
            leader: Some("m1".into()),
            state_timestamp_ms: 5,
            members: vec![DescribedMember {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                metadata: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
            }],
        };
        let key = group_metadata_key("g");
        assert_eq!(
            decode_key(&key).unwrap(),
            OffsetsKey::GroupMetadata { group: "g".into() }
        );
        let decoded = decode_group_metadata_value("g", &group_metadata_value(&group)).unwrap();
        assert_eq!(decoded, group);
    }

    #[test]
    fn truncated_values_are_errors() {
        let encoded = offset_commit_value(&CommittedOffset {
            offset: 1,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for len in 0..encoded.len() {
            assert!(decode_offset_commit_value(&encoded[..len]).is_err());
        }
        assert!(decode_key(&[0, 9]).is_err());
    }
}
