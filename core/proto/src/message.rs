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

pub use crate::error::MessageError;
pub use crate::msgtype::MessageType;

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
