//! The OAuth 2.0 pieces shared by the gateway and the emulator.

pub mod pkce;
pub mod scope;
