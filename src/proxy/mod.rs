//! The proxy side: path normalisation, routing, header hygiene, responses, and the
//! pingora glue.

pub mod certs;
pub mod forwarded;
pub mod framing;
pub mod guard;
pub mod headers;
pub mod path;
pub mod respond;
pub mod routes;
pub mod service;
pub mod settle;
pub mod tls;
