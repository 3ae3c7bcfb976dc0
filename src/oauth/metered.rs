//! An `HttpClient` that counts and times every request to Loopwise, by endpoint.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::http::{HttpClient, HttpRequest, HttpResponse, TransportError};
use crate::metrics::{status_class, Metrics};

pub struct MeteredClient {
    pub inner: Arc<dyn HttpClient>,
    pub metrics: Arc<Metrics>,
    /// The school whose server this client talks to (the `school` label).
    pub school: String,
}

/// A bounded label for a Loopwise URL.
pub fn endpoint_label(url: &str) -> &'static str {
    let path = url.split('?').next().unwrap_or("");
    if path.contains("/.well-known/oauth-authorization-server")
        || path.ends_with("/openid-configuration")
    {
        "metadata"
    } else if path.ends_with("/jwks") || path.ends_with("/jwks.json") {
        "jwks"
    } else if path.ends_with("/token") {
        "token"
    } else if path.ends_with("/userinfo") {
        "userinfo"
    } else if path.ends_with("/revoke") || path.ends_with("/revocation") {
        "revoke"
    } else if path.contains("introspect") {
        "introspection"
    } else if path.ends_with("/register") {
        "registration"
    } else {
        "other"
    }
}

#[async_trait]
impl HttpClient for MeteredClient {
    async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let endpoint = endpoint_label(&req.url);
        let started = Instant::now();
        let result = self.inner.execute(req).await;
        let class = match &result {
            Ok(r) => status_class(r.status),
            Err(_) => "error",
        };
        self.metrics
            .loopwise_requests
            .with_label_values(&[endpoint, class, &self.school])
            .inc();
        self.metrics
            .loopwise_duration
            .with_label_values(&[endpoint, &self.school])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels() {
        use super::endpoint_label as l;
        assert_eq!(l("https://lw/api/oauth/token"), "token");
        assert_eq!(
            l("https://lw/.well-known/oauth-authorization-server"),
            "metadata"
        );
        assert_eq!(l("https://lw/api/oauth/userinfo?x"), "userinfo");
        assert_eq!(l("https://lw/somewhere"), "other");
    }
}
