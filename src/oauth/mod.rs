//! The OAuth 2.0 pieces: PKCE, scopes, and the Loopwise client (shared by the gateway and
//! the emulator where it makes sense).

pub mod answers;
pub mod claims;
pub mod client;
pub mod error;
pub mod http;
pub mod id_token;
pub mod metadata;
pub mod metered;
pub mod pkce;
pub mod registration;
pub mod schools;
pub mod scope;

pub use client::{LoopwiseClient, LoopwiseError, Metadata, TokenSet};
pub use http::{HttpClient, HttpRequest, HttpResponse, ReqwestClient, TransportError};
pub use schools::{School, Schools, DEFAULT_SCHOOL};
