//! The protocol crate's one error type.

/// Everything that can be wrong with bytes that arrived from the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A frame's size prefix is negative or above the configured maximum.
    #[error("frame size {size_bytes} outside 4..={frame_bytes_max}")]
    FrameSize {
        /// The size the client claimed.
        size_bytes: i64,
        /// The largest frame this broker accepts (`socket.request.max.bytes`).
        frame_bytes_max: usize,
    },
    /// The frame is too short to hold a request header.
    #[error("frame of {size_bytes} bytes is too short for a request header")]
    FrameTooShort {
        /// Bytes in the frame.
        size_bytes: usize,
    },
    /// The API key is not one Kafka defines.
    #[error("unknown api key {api_key}")]
    UnknownApiKey {
        /// The key from the header.
        api_key: i16,
    },
    /// The header or body could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (e.g. "Produce v9 body").
        what: String,
        /// Why the decoder gave up.
        reason: String,
    },
    /// A response could not be encoded (a bug on our side, reported rather than panicking).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why the encoder gave up.
        reason: String,
    },
    /// A record batch is damaged: bad CRC, impossible lengths, truncated (Kafka's CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A record batch is well-formed but not acceptable: magic other than 2, unknown codec,
    /// record count that does not match (Kafka's INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// A record batch is larger than allowed, before or after decompression (MESSAGE_TOO_LARGE).
    #[error("record batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    BatchTooLarge {
        /// The size found (or the cap reached while decompressing).
        size_bytes: usize,
        /// The limit in force.
        limit_bytes: usize,
    },
}
