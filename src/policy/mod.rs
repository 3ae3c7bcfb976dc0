//! Request classification and the per-request authentication decision (pure).

pub mod authz;
pub mod navigation;
