//! Tokens: transparent single-flight refresh for sessions, and Bearer validation with a
//! moka cache for API clients.

pub mod cache;
pub mod refresh;
pub mod validate;
