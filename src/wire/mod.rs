//! Pure readings of HTTP/1.1 requests, below every other layer: framing, the request
//! target's path, the authority, forwarding headers and header hygiene. No pingora, no
//! session: each function decides from bytes or an `http::HeaderMap`.

pub mod bearer;
pub mod forwarded;
pub mod framing;
pub mod headers;
pub mod host;
pub mod path;
