//! The pingora side: the proxy service, routes and their backend pools, the connection
//! guard, TLS. It translates between pingora and the gateway's decisions.

pub mod certs;
pub mod guard;
pub mod routes;
pub mod service;
pub mod settle;
pub mod tls;
