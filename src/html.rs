//! Minimal HTML escaping for the pages we render (emulator and gateway alike).

/// Escapes text for use in element content and in double-quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete, self-contained page (no external resources, so it works offline).
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f6fb;color:#1d2433;margin:0}\
main{max-width:34rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0001}\
h1{font-size:1.4rem;margin-top:0}button{font:inherit;padding:.6rem 1rem;margin:.25rem 0;border-radius:8px;\
border:1px solid #3451b2;background:#3451b2;color:#fff;cursor:pointer;width:100%;text-align:left}\
button.secondary{background:#fff;color:#3451b2}code{background:#eef1f8;padding:0 .25rem;border-radius:4px}\
.muted{color:#667}";

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            super::escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
