//! State shared by gateway replicas, on `[redis]`: the implementations of the seams the
//! gateway decides through (`login::replay::ReplayGuard`, `token::refresh::RefreshCoordinator`) on a real Redis or Valkey
//! server, so a login state used on one replica is used on all.

mod conn;
mod ended;
mod invalidate;
mod refresh;
mod replay;
mod sessions;
#[cfg(test)]
mod test_server;

pub(crate) use conn::{Redis, RedisError, RedisSetupError};
pub(crate) use ended::RedisEndedSessions;
pub(crate) use invalidate::Invalidations;
pub(crate) use refresh::RedisRefresher;
pub(crate) use replay::RedisReplayGuard;
pub(crate) use sessions::RedisSessionStore;
