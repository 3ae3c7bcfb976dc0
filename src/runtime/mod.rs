//! The runtime around the gateway's decisions: start-up ([`bootstrap`]), the live gateway
//! and its reload ([`live`]), the admin listener ([`admin`]) and process signals
//! ([`lifecycle`]).

pub(crate) mod admin;
mod admin_sessions;
pub(crate) mod bootstrap;
pub(crate) mod lifecycle;
pub(crate) mod live;
