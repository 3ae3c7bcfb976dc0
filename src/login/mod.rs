//! The browser login: per-login state cookies and post-login targets.

pub mod replay;
pub mod state;
pub mod target;
