//! Per-route metric handles, resolved once per generation: a `with_label_values` call
//! hashes its labels and takes the vector's lock, and the proxy would otherwise make
//! three of them for every request.

use prometheus::{Histogram, IntCounter};

use crate::metrics::Metrics;
use crate::routes::{Route, RouteTable};

/// The status classes of `loopgate_requests_total`, in [`class_index`] order.
const CLASSES: [u16; 6] = [100, 200, 300, 400, 500, 0];

/// Position in [`CLASSES`] of a status (`0`: no response written).
fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// One route's handles (or those of the `-` route: no route matched).
pub(crate) struct RouteMeters {
    requests: [IntCounter; 6],
    pub(crate) duration: Histogram,
    pub(crate) upstream_duration: Histogram,
}

impl RouteMeters {
    fn new(m: &Metrics, route: &str) -> RouteMeters {
        RouteMeters {
            requests: CLASSES.map(|s| {
                m.requests
                    .with_label_values(&[route, crate::metrics::status_class(s)])
            }),
            duration: m.request_duration.with_label_values(&[route]),
            upstream_duration: m.upstream_duration.with_label_values(&[route]),
        }
    }

    /// `loopgate_requests_total{route, status}` for a response of `status`.
    pub(crate) fn requests(&self, status: u16) -> &IntCounter {
        &self.requests[class_index(status)]
    }
}

/// Every route's handles, by [`Route::index`].
pub(crate) struct Meters {
    by_route: Vec<RouteMeters>,
    unrouted: RouteMeters,
}

impl Meters {
    pub(crate) fn new(m: &Metrics, routes: &RouteTable) -> Meters {
        let mut named: Vec<(usize, &str)> = routes
            .iter()
            .map(|r| (r.index, r.config.name.as_str()))
            .collect();
        named.sort_unstable();
        Meters {
            by_route: named
                .into_iter()
                .map(|(_, name)| RouteMeters::new(m, name))
                .collect(),
            unrouted: RouteMeters::new(m, "-"),
        }
    }

    pub(crate) fn of(&self, route: Option<&Route>) -> &RouteMeters {
        route
            .and_then(|r| self.by_route.get(r.index))
            .unwrap_or(&self.unrouted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_line_up_with_the_labels() {
        for status in [0, 99, 100, 199, 200, 204, 302, 404, 503, 599, 600] {
            assert_eq!(
                crate::metrics::status_class(CLASSES[class_index(status)]),
                crate::metrics::status_class(status),
                "{status}"
            );
        }
    }
}
