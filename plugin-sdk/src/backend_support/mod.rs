//! Building blocks the bundled backends share (and third-party backends may use).
//!
//! A backend plugin sets up sockets and hands them to the host; what is left to it is
//! mostly the same from one transport to the next:
//! * [`redial`]: Go receptor's dial-and-redial cycle for peers (5 s backoff growing by
//!   1.5 up to 20 s, reset by every successful dial), with a ready-made threaded dialer;
//! * [`listen`]: the `bindaddr`/`port` keys of listener sections and binding them;
//! * [`signal`]: a stop flag and wake-up a plugin thread can wait on, alone or next to
//!   sockets in `poll`;
//! * [`seqpacket`]: message-preserving unix socket pairs, for transports (UDP,
//!   websockets) whose messages the plugin moves itself and hands the host one end of.
//!
//! All of it is synchronous and blocking, like the rest of the SDK; a plugin with an
//! async runtime of its own uses the parts that do not block ([`redial::Backoff`],
//! [`seqpacket`]'s non-blocking calls, [`listen`]).

pub mod listen;
pub mod redial;
pub mod seqpacket;
pub mod signal;

pub use redial::{Backoff, BACKOFF_MAX, BACKOFF_START};
pub use signal::Signal;
