//! Remote work: units submitted on this node for another node.

#[cfg(test)]
pub mod gonode;
