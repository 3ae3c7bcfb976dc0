//! A moment's grace between "stop accepting" and "drop idle connections".
//!
//! When the proxy service stops (SIGTERM, or the old side of a graceful upgrade), pingora
//! ends the accept loops and at once closes every connection still waiting for a request
//! header. That includes a connection accepted an instant earlier whose request is still
//! on its way, so the client sees the connection closed unanswered: 1 request in about
//! 2 800 across an upgrade, in `tests/upgrade.rs`. Waiting before that clean-up lets
//! those requests arrive and be served (with `Connection: close`); nothing new is
//! accepted meanwhile.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// Covers a request that follows the TCP (and TLS) handshake by a round trip or so.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// Wraps a pingora app, delaying its clean-up by `settle`.
pub(crate) struct Settle<A> {
    inner: Arc<A>,
    settle: Duration,
}

impl<A> Settle<A> {
    pub(crate) fn new(inner: A, settle: Duration) -> Self {
        Settle {
            inner: Arc::new(inner),
            settle,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Settle<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.settle).await;
        self.inner.cleanup().await;
    }
}
