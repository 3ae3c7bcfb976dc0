//! Tokens: transparent single-flight refresh for sessions, and Bearer validation with a
//! moka cache for API clients.

pub(crate) mod cache;
pub(crate) mod refresh;
pub(crate) mod validate;
