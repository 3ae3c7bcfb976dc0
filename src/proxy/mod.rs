//! The pingora side: the proxy service, routes and their backend pools, the connection
//! guard, TLS. It translates between pingora and the gateway's decisions.

pub mod certs;
pub mod current;
pub mod guard;
pub mod pools;
pub mod service;
pub mod settle;
pub mod tls;
