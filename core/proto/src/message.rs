//! The message envelope: `type: u8 ‖ body`.
//!
//! | type | name   | body                                   |
//! |------|--------|----------------------------------------|
//! | 0    | DATA   | 35 more header bytes + payload         |
//! | 1    | ROUTE  | JSON routing update                    |
//! | 2    | SVCAD  | JSON service advertisement             |
//! | 3    | REJECT | JSON `[]` (ignored by receivers)       |
//!
//! There is no version, checksum or length inside a message; backends delimit them.

use crate::data::{DataHeader, DATA_HEADER_LEN};
use crate::svcad::SvcadMessage;
use crate::update::RoutingUpdate;

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

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A datagram between services.
    Data = 0,
    /// A link-state routing update.
    Route = 1,
    /// A service advertisement.
    ServiceAdvertisement = 2,
    /// Refusal of a session.
    Reject = 3,
}

impl MessageType {
    /// The type of a message, from its first byte.
    pub fn of(msg: &[u8]) -> Result<MessageType, MessageError> {
        match msg.first() {
            None => Err(MessageError::Empty),
            Some(0) => Ok(MessageType::Data),
            Some(1) => Ok(MessageType::Route),
            Some(2) => Ok(MessageType::ServiceAdvertisement),
            Some(3) => Ok(MessageType::Reject),
            Some(&t) => Err(MessageError::UnknownType(t)),
        }
    }
}

/// The complete REJECT message Go sends: type 3 and the JSON `[]`.
pub const REJECT_MESSAGE: &[u8] = b"\x03[]";

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// DATA: header and payload.
    Data {
        /// The fixed header.
        header: DataHeader,
        /// The payload bytes.
        payload: &'a [u8],
    },
    /// ROUTE.
    Route(RoutingUpdate),
    /// SVCAD (forward the original bytes, not a re-encoding).
    ServiceAdvertisement(SvcadMessage),
    /// REJECT (its body is ignored).
    Reject,
}

impl<'a> Message<'a> {
    /// Decodes a complete message.
    pub fn decode(msg: &'a [u8]) -> Result<Message<'a>, MessageError> {
        match MessageType::of(msg)? {
            MessageType::Data => Ok(Message::Data {
                header: DataHeader::decode(msg)?,
                payload: &msg[DATA_HEADER_LEN..],
            }),
            MessageType::Route => Ok(Message::Route(RoutingUpdate::decode(&msg[1..])?)),
            MessageType::ServiceAdvertisement => Ok(Message::ServiceAdvertisement(
                SvcadMessage::decode(&msg[1..])?,
            )),
            MessageType::Reject => Ok(Message::Reject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn types() {
        assert_eq!(MessageType::of(&[]), Err(MessageError::Empty));
        assert_eq!(MessageType::of(&[7]), Err(MessageError::UnknownType(7)));
        assert_eq!(MessageType::of(REJECT_MESSAGE), Ok(MessageType::Reject));
        assert_eq!(Message::decode(REJECT_MESSAGE), Ok(Message::Reject));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&b);
        }

        #[test]
        fn arbitrary_json_bodies_never_panic(t in 1u8..3, s in "\\PC{0,200}") {
            let mut b = vec![t];
            b.extend_from_slice(s.as_bytes());
            let _ = Message::decode(&b);
        }
    }
}
