//! The type byte every message starts with.

use crate::error::MessageError;

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
