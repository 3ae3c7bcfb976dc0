//! Reading and writing the gateway's cookies: joining `Cookie` fields, splitting large
//! values into numbered chunks and rejoining them, and `Set-Cookie` attributes.

/// Longest value placed in one cookie; browsers cap a cookie near 4096 bytes all told.
pub const CHUNK: usize = 3800;
/// At most this many chunks are read or written (≈ 38 KB), bounding header work.
pub const MAX_CHUNKS: usize = 10;

/// All `name=value` pairs of a request's `Cookie` fields. HTTP/2 clients may send several
/// fields (RFC 9113 §8.2.3), so every field is read.
pub fn parse<'a>(fields: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    fields
        .into_iter()
        .flat_map(|f| f.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn get<'a>(jar: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    jar.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn chunk_name(name: &str, i: usize) -> String {
    format!("{name}_{i}")
}

/// The value of cookie `name`, rejoined from `name_0`, `name_1`, … when it was chunked.
pub fn read_chunked(jar: &[(&str, &str)], name: &str) -> Option<String> {
    if let Some(v) = get(jar, name) {
        return Some(v.to_string());
    }
    let mut out = String::new();
    for i in 0..MAX_CHUNKS {
        match get(jar, &chunk_name(name, i)) {
            Some(v) => out.push_str(v),
            None => break,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether the request carries `name` in any form (plain or chunked).
pub fn present_names(jar: &[(&str, &str)], name: &str) -> Vec<String> {
    jar.iter()
        .map(|(k, _)| *k)
        .filter(|k| {
            *k == name
                || k.strip_prefix(name)
                    .and_then(|r| r.strip_prefix('_'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

/// Attributes shared by a cookie's setting and its clearing, so a clear always matches.
#[derive(Debug, Clone)]
pub struct Attributes {
    pub path: String,
    pub secure: bool,
}

impl Attributes {
    pub fn render(&self, max_age: u64) -> String {
        let mut s = format!(
            "Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax",
            self.path
        );
        if self.secure {
            s.push_str("; Secure");
        }
        s
    }
}

/// `Set-Cookie` values that store `value` under `name` (chunked when large) and expire any
/// other form of `name` the browser still has (`existing`, from [`present_names`]).
/// `None` when the value is too large even for `MAX_CHUNKS` chunks.
pub fn set_chunked(
    name: &str,
    value: &str,
    attrs: &Attributes,
    max_age: u64,
    existing: &[String],
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut written = Vec::new();
    if value.len() <= CHUNK {
        out.push(format!("{name}={value}; {}", attrs.render(max_age)));
        written.push(name.to_string());
    } else {
        let chunks: Vec<&[u8]> = value.as_bytes().chunks(CHUNK).collect();
        if chunks.len() > MAX_CHUNKS {
            return None;
        }
        for (i, c) in chunks.iter().enumerate() {
            let n = chunk_name(name, i);
            out.push(format!(
                "{n}={}; {}",
                std::str::from_utf8(c).expect("sealed values are ASCII"),
                attrs.render(max_age)
            ));
            written.push(n);
        }
    }
    for stale in existing.iter().filter(|e| !written.contains(e)) {
        out.push(clear(stale, attrs));
    }
    Some(out)
}

/// A `Set-Cookie` that deletes `name` (same attributes as when it was set).
pub fn clear(name: &str, attrs: &Attributes) -> String {
    format!("{name}=; {}", attrs.render(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_several_cookie_fields() {
        let jar = parse(["a=1; b=2", "c=3", " ; =x; d"]);
        assert_eq!(jar, [("a", "1"), ("b", "2"), ("c", "3")]);
    }

    #[test]
    fn chunking_round_trips_and_clears_leftovers() {
        let attrs = Attributes {
            path: "/".into(),
            secure: true,
        };
        let big = "x".repeat(CHUNK * 2 + 10);
        let set = set_chunked("s", &big, &attrs, 60, &["s".into(), "s_5".into()]).unwrap();
        assert_eq!(set.len(), 3 + 2);
        assert!(
            set[0].starts_with("s_0=") && set[0].contains("Secure") && set[0].contains("HttpOnly")
        );
        assert!(set[3].starts_with("s=;") && set[3].contains("Max-Age=0"));
        let header: Vec<String> = set[..3]
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect();
        let joined = header.join("; ");
        let jar = parse([joined.as_str()]);
        assert_eq!(read_chunked(&jar, "s").unwrap(), big);
        assert_eq!(present_names(&jar, "s"), ["s_0", "s_1", "s_2"]);

        let small = set_chunked("s", "v", &attrs, 60, &["s_0".into(), "s_1".into()]).unwrap();
        assert_eq!(small.len(), 3);
        assert!(set_chunked("s", &"y".repeat(CHUNK * MAX_CHUNKS + 1), &attrs, 60, &[]).is_none());
    }

    #[test]
    fn other_cookies_are_not_mistaken_for_chunks() {
        let jar = parse(["s_x=1; sx=2; s_=3; s_1=4"]);
        assert_eq!(present_names(&jar, "s"), ["s_1"]);
        assert_eq!(read_chunked(&jar, "s"), None, "chunks must start at _0");
    }
}
