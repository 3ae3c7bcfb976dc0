//! Prometheus metrics, registered explicitly on one registry with bounded labels (route
//! names and fixed outcome words — never paths, users or tokens).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for request latencies: 0.5 ms … 10 s.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub auth_decisions: IntCounterVec,
    pub logins: IntCounterVec,
    pub refresh: IntCounterVec,
    pub refresh_coalesced: IntCounter,
    /// Dynamic registrations made again because the school forgot the client.
    pub reregistrations: IntCounterVec,
    pub loopwise_requests: IntCounterVec,
    pub loopwise_duration: HistogramVec,
    pub token_cache_requests: IntCounterVec,
    pub token_cache_entries: IntGauge,
    pub backend_healthy: IntGaugeVec,
    /// 1 when the school's metadata is loaded (it can sign users in), per school.
    pub school_ready: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    /// Downstream connections open now, and those refused over `server.max_connections`.
    pub connections_open: IntGauge,
    pub connections_refused: IntCounter,
    /// Connections closed because a request header did not arrive within
    /// `server.header_timeout`.
    pub header_timeouts: IntCounter,
    /// Commands sent to `[redis]`, by command and result (`ok`, `error`, `timeout`).
    pub redis_commands: IntCounterVec,
    /// Cross-replica refresh coordination: `leader` (this replica spent the token),
    /// `remote` (served another replica's outcome), `lease_wait`, `fallback` (Redis down).
    pub refresh_shared: IntCounterVec,
    pub redis_duration: HistogramVec,
    /// How long requests waited for another replica's refresh (those that waited).
    pub refresh_lease_wait: Histogram,
    /// Server-side sessions: `hit` (opened here within 0.5 s, no Redis round trip),
    /// `miss` (fetched from Redis), `stale` (Redis unreachable, the copy opened before used).
    pub session_cache: IntCounterVec,
    /// Sessions ended by an operator (`POST /sessions/revoke`).
    pub sessions_revoked: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn plain_histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY.to_vec()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("loopgate".into()), None).expect("valid prefix");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let token_cache_entries = IntGauge::new(
            "token_cache_entries",
            "Validated Bearer tokens currently cached.",
        )
        .expect("valid metric");
        r.register(Box::new(token_cache_entries.clone()))
            .expect("unique metric");
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "backend_healthy",
                "1 when the backend passes its health checks.",
            ),
            &["route", "backend"],
        )
        .expect("valid metric");
        r.register(Box::new(backend_healthy.clone()))
            .expect("unique metric");
        let school_ready = IntGaugeVec::new(
            Opts::new(
                "school_ready",
                "1 when the school's discovery document is loaded and its users can sign in.",
            ),
            &["school"],
        )
        .expect("valid metric");
        r.register(Box::new(school_ready.clone()))
            .expect("unique metric");
        let refresh_coalesced = IntCounter::new(
            "refresh_coalesced_total",
            "Requests that needed a refresh and were served by another request's refresh.",
        )
        .expect("valid metric");
        r.register(Box::new(refresh_coalesced.clone()))
            .expect("unique metric");
        let connections_open = IntGauge::new(
            "connections_open",
            "Downstream connections open on the proxy listener.",
        )
        .expect("valid metric");
        r.register(Box::new(connections_open.clone()))
            .expect("unique metric");
        let m = Metrics {
            requests: counter(
                &r,
                "requests_total",
                "Requests handled, by route and status class.",
                &["route", "status_class"],
            ),
            request_duration: histogram(
                &r,
                "request_duration_seconds",
                "Time from request to response, by route.",
                &["route"],
            ),
            upstream_duration: histogram(
                &r,
                "upstream_duration_seconds",
                "Time from choosing a backend to its response header, by route.",
                &["route"],
            ),
            upstream_errors: counter(
                &r,
                "upstream_errors_total",
                "Failed upstream attempts, by route and kind.",
                &["route", "kind"],
            ),
            auth_decisions: counter(
                &r,
                "auth_decisions_total",
                "Authentication outcomes, by route.",
                &["route", "outcome"],
            ),
            logins: counter(
                &r,
                "logins_total",
                "Completed login callbacks, by result and school.",
                &["result", "school"],
            ),
            refresh: counter(
                &r,
                "refresh_total",
                "Token refreshes sent to Loopwise, by result and school.",
                &["result", "school"],
            ),
            refresh_coalesced,
            reregistrations: counter(
                &r,
                "reregistrations_total",
                "Dynamic client registrations made again after the school answered invalid_client, by school and result.",
                &["school", "result"],
            ),
            loopwise_requests: counter(
                &r,
                "loopwise_requests_total",
                "Requests to Loopwise, by endpoint, status class and school.",
                &["endpoint", "status_class", "school"],
            ),
            loopwise_duration: histogram(
                &r,
                "loopwise_request_duration_seconds",
                "Latency of requests to Loopwise, by endpoint and school.",
                &["endpoint", "school"],
            ),
            token_cache_requests: counter(
                &r,
                "token_cache_requests_total",
                "Bearer validation cache lookups, by result.",
                &["result"],
            ),
            token_cache_entries,
            backend_healthy,
            school_ready,
            config_reloads: counter(
                &r,
                "config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            connections_open,
            connections_refused: plain_counter(
                &r,
                "connections_refused_total",
                "Downstream connections refused because server.max_connections were open.",
            ),
            header_timeouts: plain_counter(
                &r,
                "header_timeouts_total",
                "Connections closed because a request header took longer than server.header_timeout.",
            ),
            redis_commands: counter(
                &r,
                "redis_commands_total",
                "Commands sent to Redis, by command and result (ok, error, timeout).",
                &["command", "result"],
            ),
            refresh_shared: counter(
                &r,
                "refresh_shared_total",
                "Cross-replica refresh coordination, by event (leader, remote, lease_wait, fallback).",
                &["event"],
            ),
            redis_duration: histogram(
                &r,
                "redis_command_duration_seconds",
                "Latency of Redis commands, by command.",
                &["command"],
            ),
            refresh_lease_wait: plain_histogram(
                &r,
                "refresh_lease_wait_seconds",
                "Time requests waited for the replica holding a refresh lease.",
            ),
            session_cache: counter(
                &r,
                "session_cache_total",
                "Server-side sessions opened, by result (hit: no Redis round trip, miss, stale: Redis unreachable).",
                &["result"],
            ),
            sessions_revoked: plain_counter(
                &r,
                "sessions_revoked_total",
                "Sessions ended by an operator on the admin listener.",
            ),
            registry: r,
        };
        // Series that alerts use exist from the start (at 0), so a first failure is a rise.
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "negative_hit", "error"] {
            m.token_cache_requests.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "stale"] {
            m.session_cache.with_label_values(&[result]);
        }
        m
    }

    /// Creates a school's series that alerts use (at 0), so a first failure is a rise;
    /// called for every configured school (the label stays bounded by the config).
    pub fn school_series(&self, school: &str) {
        for result in ["ok", "invalid_grant", "invalid_client", "transient_error"] {
            self.refresh.with_label_values(&[result, school]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `2xx`, `4xx`, … (`error` when no response was written).
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_rendered() {
        let m = Metrics::new();
        m.requests.with_label_values(&["app", "2xx"]).inc();
        m.refresh.with_label_values(&["ok", "default"]).inc();
        let text = m.render();
        assert!(
            text.contains("loopgate_requests_total{route=\"app\",status_class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("loopgate_build_info{version="));
        assert!(
            text.contains("loopgate_refresh_total{result=\"ok\",school=\"default\"} 1"),
            "{text}"
        );
        // Unlabelled series exist (at 0) before the first event, so a first one is a rise.
        assert!(
            text.contains("loopgate_connections_refused_total 0"),
            "{text}"
        );
        assert!(text.contains("loopgate_header_timeouts_total 0"), "{text}");
        assert!(text.contains("loopgate_connections_open 0"), "{text}");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(0), "error");
    }
}
