//! Peers that send bad input.
