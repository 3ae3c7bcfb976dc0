//! Pure policy pieces: whether a request is a browser navigation, and what a route
//! requires of an identity. The per-request decision itself is `gateway::authorize`.

pub(crate) mod authz;
pub(crate) mod navigation;
