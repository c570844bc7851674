//! The error every message decoder returns, shared by the envelope ([`crate::message`])
//! and the body codecs ([`crate::data`], [`crate::update`], [`crate::svcad`]).

/// Errors decoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message has no bytes at all.
    #[error("empty message")]
    Empty,
    /// The type byte is not one of DATA, ROUTE, SVCAD, REJECT.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A DATA message shorter than its 36-byte header.
    #[error("data too short to be a valid message ({0} bytes)")]
    DataTooShort(usize),
    /// A JSON body that Go would refuse.
    #[error("bad json: {0}")]
    Json(String),
    /// A field with a value Go would refuse.
    #[error("bad {field}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
