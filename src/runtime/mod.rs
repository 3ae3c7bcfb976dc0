//! The runtime around the gateway's decisions: start-up ([`bootstrap`]), the live gateway
//! and its reload ([`live`]), the admin listener ([`admin`]) and process signals
//! ([`lifecycle`]).

pub mod admin;
pub mod bootstrap;
pub mod lifecycle;
pub mod live;
