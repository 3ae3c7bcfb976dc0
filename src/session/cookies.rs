//! Reading and writing the gateway's cookies: joining `Cookie` fields, splitting large
//! values into numbered chunks and rejoining them, and `Set-Cookie` attributes.

/// Longest value placed in one cookie; browsers cap a cookie near 4096 bytes all told.
pub(crate) const CHUNK: usize = 3800;
/// At most this many chunks are read or written (≈ 38 KB), bounding header work.
pub(crate) const MAX_CHUNKS: usize = 10;

/// All `name=value` pairs of a request's `Cookie` fields. HTTP/2 clients may send several
/// fields (RFC 9113 §8.2.3), so every field is read.
pub(crate) fn parse<'a>(fields: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
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

/// The value of `name` when the jar holds it exactly once; `Err` when it holds it more
/// than once (which of two values the browser meant cannot be known).
fn get_unique<'a>(jar: &[(&'a str, &'a str)], name: &str) -> Result<Option<&'a str>, ()> {
    let mut found = jar.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v);
    match (found.next(), found.next()) {
        (Some(_), Some(_)) => Err(()),
        (v, None) => Ok(v),
        (None, Some(_)) => unreachable!("a second match implies a first"),
    }
}

fn chunk_name(name: &str, i: usize) -> String {
    format!("{name}_{i}")
}

/// The value of cookie `name`, rejoined from `name_0`, `name_1`, … when it was chunked.
/// `None` when absent, and when the name or a chunk it reads is sent twice: "first wins"
/// would let a planted cookie decide which session a request has, so an ambiguous jar
/// has none (the caller then clears every name [`present_names`] lists).
pub(crate) fn read_chunked(jar: &[(&str, &str)], name: &str) -> Option<String> {
    if let Some(v) = get_unique(jar, name).ok()? {
        return Some(v.to_string());
    }
    let mut out = String::new();
    for i in 0..MAX_CHUNKS {
        match get_unique(jar, &chunk_name(name, i)).ok()? {
            Some(v) => out.push_str(v),
            None => break,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The forms of `name` the request carries that the gateway could have set — `name` and
/// `name_0` … `name_{MAX_CHUNKS-1}` — each once, whatever the request repeats: a clear
/// is sent for each, so a request must not be able to ask for more.
pub(crate) fn present_names(jar: &[(&str, &str)], name: &str) -> Vec<String> {
    std::iter::once(name.to_string())
        .chain((0..MAX_CHUNKS).map(|i| chunk_name(name, i)))
        .filter(|candidate| jar.iter().any(|(k, _)| k == candidate))
        .collect()
}

/// Attributes shared by a cookie's setting and its clearing, so a clear always matches.
#[derive(Debug, Clone)]
pub(crate) struct Attributes {
    pub path: String,
    pub secure: bool,
}

impl Attributes {
    pub(crate) fn render(&self, max_age: u64) -> String {
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
pub(crate) fn set_chunked(
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
pub(crate) fn clear(name: &str, attrs: &Attributes) -> String {
    format!("{name}=; {}", attrs.render(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn present_names_lists_only_what_the_gateway_sets_each_once() {
        let mut fields = vec!["s=a; s=b; s_0=c; s_0=d".to_string()];
        fields.extend((0..40_000).map(|i| format!("s_{i}=")));
        fields.push("s_00=1; s_01=2; s_9=3; s_10=4".into());
        let jar = parse(fields.iter().map(String::as_str));
        let names = present_names(&jar, "s");
        let expected: Vec<String> = std::iter::once("s".to_string())
            .chain((0..MAX_CHUNKS).map(|i| format!("s_{i}")))
            .collect();
        assert_eq!(names, expected);
        assert!(present_names(&parse(["s_10=1; s_00=2; t=3"]), "s").is_empty());
    }

    #[test]
    fn a_name_sent_twice_reads_as_no_session() {
        for header in [
            "s=a; s=b",
            "s=a; t=1; s=a",
            "s_0=a; s_0=b",
            "s_0=a; s_1=b; s_1=c",
        ] {
            assert_eq!(read_chunked(&parse([header]), "s"), None, "{header}");
        }
        // Across two Cookie fields too (HTTP/2).
        assert_eq!(read_chunked(&parse(["s=a", "s=b"]), "s"), None);
        // Duplicates of names it does not read do not matter.
        assert_eq!(
            read_chunked(&parse(["s=a; t=1; t=2; s_0=x"]), "s").as_deref(),
            Some("a")
        );
        assert_eq!(
            read_chunked(&parse(["s_0=a; s_1=b; s_3=c; s_3=d"]), "s").as_deref(),
            Some("ab")
        );
        let both = parse(["s=a; s=b"]);
        assert_eq!(
            present_names(&both, "s"),
            ["s"],
            "the caller clears it once"
        );
    }

    use crate::testing::proptest_cases as cases;

    /// Cookie fields mixing arbitrary text with pairs named like the session's.
    fn fields() -> impl Strategy<Value = Vec<String>> {
        let name = prop_oneof![
            Just("s".to_string()),
            (0..MAX_CHUNKS + 2).prop_map(|i| format!("s_{i}")),
            "[a-z_0-9]{0,4}",
        ];
        let pair = prop_oneof![
            (name, "[A-Za-z0-9.=\"-]{0,8}").prop_map(|(k, v)| format!("{k}={v}")),
            "\\PC{0,12}",
        ];
        proptest::collection::vec(proptest::collection::vec(pair, 0..8), 0..4)
            .prop_map(|fs| fs.into_iter().map(|f| f.join("; ")).collect())
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn parse_never_panics(fs in proptest::collection::vec("\\PC*", 0..4)) {
            let jar = parse(fs.iter().map(String::as_str));
            prop_assert!(jar.iter().all(|(k, _)| !k.is_empty()));
        }

        #[test]
        fn ambiguous_jars_have_no_session(fs in fields()) {
            let jar = parse(fs.iter().map(String::as_str));
            let count = |n: &str| jar.iter().filter(|(k, _)| *k == n).count();
            let read = read_chunked(&jar, "s");
            if count("s") >= 2 || (count("s") == 0 && count("s_0") >= 2) {
                prop_assert_eq!(read, None);
            }
            let names = present_names(&jar, "s");
            prop_assert!(names.len() <= MAX_CHUNKS + 1);
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), names.len());
            // Appending a second copy of the base name always ends the session.
            let mut doubled = fs.clone();
            doubled.push("s=x; s=y".into());
            let jar = parse(doubled.iter().map(String::as_str));
            prop_assert_eq!(read_chunked(&jar, "s"), None);
        }
    }
}
