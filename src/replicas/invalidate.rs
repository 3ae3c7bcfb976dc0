//! Sessions changed or ended on one replica, announced to the others over Redis pub/sub
//! (channel `<prefix>sessions`, payload the hex SHA-256 of the session id), so that a
//! replica may keep using a session it opened without asking Redis again for as long as
//! it knows it would have heard of a change.
//!
//! "Would have heard" is measured, not assumed: every replica publishes a heartbeat on
//! the channel every [`HEARTBEAT`] and notes when its own comes back. Every announcement
//! published before a heartbeat that came back has been received, so a copy opened
//! before that heartbeat was sent and not announced since is still current. When the
//! subscription breaks or lags (Redis down, a silently dropped connection), heartbeats
//! stop coming back and every copy falls back to the short recheck of the caller.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::Redis;

/// How often each replica checks its subscription with a heartbeat.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a change is remembered, to refuse a copy read just before it.
const REMEMBER: Duration = Duration::from_secs(120);
const HEARTBEAT_PREFIX: &str = "hb:";

pub(crate) struct Invalidations {
    redis: Redis,
    channel: String,
    /// This replica's heartbeat tag.
    me: String,
    /// When this replica started counting (heartbeats carry milliseconds since).
    epoch: Instant,
    state: Mutex<State>,
    changed: moka::sync::Cache<[u8; 32], Instant>,
    /// Whether the subscription task runs (started by the first request, on the runtime
    /// that serves them, never on the short-lived start-up one).
    listening: std::sync::Once,
}

#[derive(Default)]
struct State {
    /// Since when the current subscription has been receiving (`None`: not subscribed).
    subscribed_at: Option<Instant>,
    /// When the latest heartbeat that came back had been sent.
    confirmed: Option<Instant>,
}

impl Invalidations {
    pub(crate) fn new(redis: Redis) -> Invalidations {
        Invalidations {
            channel: redis.named("sessions"),
            redis,
            me: crate::random::token(),
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            changed: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(REMEMBER)
                .build(),
            listening: std::sync::Once::new(),
        }
    }

    /// Starts listening, once.
    pub(crate) fn listen(self: &std::sync::Arc<Self>) {
        self.listening.call_once(|| {
            tokio::spawn(self.clone().run());
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a copy of session `d` opened at `at` (when its read from Redis began) is
    /// known to be current: nothing announced about it since, and every announcement
    /// made since `at` has arrived.
    pub(crate) fn current(&self, d: &[u8; 32], at: Instant) -> bool {
        if self.changed_since(d, at) {
            return false;
        }
        let s = self.state();
        let recent = Instant::now().checked_sub(HEARTBEAT * 2);
        matches!(
            (s.subscribed_at, s.confirmed, recent),
            (Some(sub), Some(conf), Some(recent)) if sub <= at && conf >= recent
        )
    }

    /// Whether session `d` was announced changed after `at`.
    pub(crate) fn changed_since(&self, d: &[u8; 32], at: Instant) -> bool {
        self.changed.get(d).is_some_and(|t| t >= at)
    }

    /// Tells every replica (this one included) that session `d` changed or ended.
    pub(crate) async fn announce(&self, d: &[u8; 32]) {
        self.changed.insert(*d, Instant::now());
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(crate::hex::encode(d));
        if let Err(e) = self.redis.query::<i64>("publish", &publish).await {
            // The others fall back to rechecking within their short window.
            tracing::debug!(error = %e, "cannot announce a session change");
        }
    }

    fn received(&self, payload: &str) {
        if let Some(hb) = payload.strip_prefix(HEARTBEAT_PREFIX) {
            let Some((who, ms)) = hb.split_once(':') else {
                return;
            };
            if who == self.me {
                if let Ok(ms) = ms.parse::<u64>() {
                    let sent = self.epoch + Duration::from_millis(ms);
                    let mut s = self.state();
                    if s.confirmed.is_none_or(|c| c < sent) {
                        s.confirmed = Some(sent);
                    }
                }
            }
        } else if let Some(d) = crate::hex::decode32(payload) {
            self.changed.insert(d, Instant::now());
        }
    }

    /// Keeps a subscription open for as long as the process runs, reopening it (after
    /// a pause that grows to 5 s) whenever it breaks.
    async fn run(self: std::sync::Arc<Self>) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.subscribe_once().await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(e) => tracing::debug!(error = %e, "session announcements: subscription failed"),
            }
            *self.state() = State::default();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn subscribe_once(&self) -> Result<(), super::RedisError> {
        let mut pubsub = self.redis.pubsub().await?;
        pubsub
            .subscribe(&self.channel)
            .await
            .map_err(super::RedisError::Command)?;
        self.state().subscribed_at = Some(Instant::now());
        let mut messages = pubsub.into_on_message();
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) => {
                        if let Ok(payload) = m.get_payload::<String>() {
                            self.received(&payload);
                        }
                    }
                    None => return Ok(()),
                },
                _ = beat.tick() => {
                    let ms = self.epoch.elapsed().as_millis();
                    let mut publish = redis::cmd("PUBLISH");
                    publish
                        .arg(&self.channel)
                        .arg(format!("{HEARTBEAT_PREFIX}{}:{ms}", self.me));
                    // A failure shows as a heartbeat that does not come back.
                    let _ = self.redis.query::<i64>("heartbeat", &publish).await;
                }
            }
        }
    }
}
