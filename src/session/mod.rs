//! Browser sessions: the model, the sealed cookie codec, and where sessions are stored.

pub(crate) mod cookies;
pub(crate) mod model;
pub(crate) mod revoked;
pub(crate) mod seal;
pub(crate) mod store;

pub(crate) use model::{Identity, Session};
pub(crate) use revoked::{EndedSessions, Revocations};
pub(crate) use seal::{Keyring, Purpose};
pub(crate) use store::{CookieStore, SessionStore, SessionSummary, StoreError};
