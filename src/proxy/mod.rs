//! The pingora side: the proxy service, routes and their backend pools, the connection
//! guard, TLS. It translates between pingora and the gateway's decisions.

pub(crate) mod certs;
pub(crate) mod current;
pub(crate) mod guard;
pub(crate) mod meters;
pub(crate) mod pools;
pub(crate) mod service;
pub(crate) mod settle;
pub(crate) mod tls;
