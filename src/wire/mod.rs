//! Pure readings of HTTP/1.1 requests, below every other layer: framing, the request
//! target's path, the authority, forwarding headers and header hygiene. No pingora, no
//! session: each function decides from bytes or an `http::HeaderMap`.

pub(crate) mod bearer;
pub(crate) mod forwarded;
pub(crate) mod framing;
pub(crate) mod headers;
pub(crate) mod host;
pub(crate) mod path;
