//! Browser navigation or API call? Navigations without a session are sent to log in;
//! anything else gets a 401 (an XHR must never be redirected to a login page).

use http::{HeaderMap, Method};

/// A navigation is `Sec-Fetch-Mode: navigate`, or (without Fetch Metadata) a GET/HEAD that
/// accepts `text/html` and is not marked as XHR.
pub(crate) fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"))
    {
        return false;
    }
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut parts = t.split(';');
            let mime = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            mime.eq_ignore_ascii_case("text/html") && !q_zero
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn classification() {
        let chrome_nav = h(&[
            ("sec-fetch-mode", "navigate"),
            ("accept", "text/html,*/*;q=0.8"),
        ]);
        assert!(is_navigation(&Method::GET, &chrome_nav));
        assert!(is_navigation(
            &Method::POST,
            &h(&[("sec-fetch-mode", "navigate")])
        ));
        let fetch = h(&[("sec-fetch-mode", "cors"), ("accept", "text/html")]);
        assert!(!is_navigation(&Method::GET, &fetch));
        assert!(is_navigation(&Method::GET, &h(&[("accept", "text/html")])));
        assert!(is_navigation(
            &Method::HEAD,
            &h(&[("accept", "application/xhtml+xml, text/html")])
        ));
        assert!(!is_navigation(
            &Method::POST,
            &h(&[("accept", "text/html")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &h(&[("accept", "application/json")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &h(&[("accept", "text/html;q=0")])
        ));
        assert!(!is_navigation(&Method::GET, &h(&[])));
        assert!(!is_navigation(
            &Method::GET,
            &h(&[
                ("accept", "text/html"),
                ("x-requested-with", "XMLHttpRequest")
            ])
        ));
    }
}
