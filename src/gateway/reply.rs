//! Responses the gateway writes itself: HTML pages for browsers, JSON for API clients.
//! Bodies never carry internal detail (no tokens, no upstream errors).

use bytes::Bytes;
use serde_json::json;

use crate::html::{escape, page};

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Close the connection after this reply (the rest of the request cannot be trusted,
    /// e.g. after a framing error: reading on could smuggle the next request).
    pub close: bool,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![("cache-control", "no-store".into())],
            body: Bytes::new(),
            close: false,
        }
    }

    /// This reply ends the connection.
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn cookies(mut self, set_cookies: impl IntoIterator<Item = String>) -> Reply {
        for c in set_cookies {
            self.headers.push(("set-cookie", c));
        }
        self
    }

    pub fn html(status: u16, title: &str, inner_html: &str) -> Reply {
        let mut r = Reply::new(status)
            .header("content-type", "text/html; charset=utf-8")
            .header("x-frame-options", "DENY")
            .header(
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            )
            .header("referrer-policy", "no-referrer");
        r.body = Bytes::from(page(title, inner_html));
        r
    }

    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        let mut r = Reply::new(status).header("content-type", "application/json");
        r.body = Bytes::from(value.to_string());
        r
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::new(status).header("location", location)
    }

    /// A plain-words error for a browser, or JSON `{error, error_description}` for an API
    /// client.
    pub fn error(status: u16, navigation: bool, code: &str, message: &str) -> Reply {
        if navigation {
            Reply::html(
                status,
                message,
                &format!(
                    "<h1>{}</h1><p id=\"error\" class=\"muted\">{}</p><p><a href=\"/\">Back to the start page</a></p>",
                    escape(message),
                    escape(code)
                ),
            )
        } else {
            Reply::json(status, json!({"error": code, "error_description": message}))
        }
    }

    /// 401 for API clients (RFC 6750): never a redirect.
    pub fn unauthorized(message: &str) -> Reply {
        Reply::json(
            401,
            json!({"error": "unauthorized", "error_description": message}),
        )
        .header("www-authenticate", "Bearer realm=\"loopgate\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_json_is_json() {
        let r = Reply::error(400, true, "x", "<script>");
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("&lt;script&gt;") && !body.contains("<script>"));
        let r = Reply::error(503, false, "loopwise_unreachable", "down");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "loopwise_unreachable");
        let r = Reply::unauthorized("no session");
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "www-authenticate" && v.starts_with("Bearer")));
    }
}
