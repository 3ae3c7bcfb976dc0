//! Browser sessions: the model, the sealed cookie codec, and where sessions are stored.

pub mod cookies;
pub mod model;
pub mod revoked;
pub mod seal;
pub mod store;

pub use model::{Identity, Session};
pub use revoked::Revocations;
pub use seal::{Keyring, Purpose, SealError};
pub use store::{CookieStore, SessionStore, StoreError};
