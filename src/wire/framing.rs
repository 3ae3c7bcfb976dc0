//! Message framing checks. A message is framed by exactly one plain decimal
//! `Content-Length`, or by `Transfer-Encoding: chunked`, or by neither — anything else
//! is refused (as nginx does), because two parties that resolve an ambiguous framing
//! differently disagree on where the next request starts (request smuggling).

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Neither header: no body for a request; for a response, the body runs until the
    /// connection closes unless its status or the request method says there is none
    /// (the caller knows those).
    Empty,
    Length(u64),
    Chunked,
}

/// Why a message's framing is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    /// Several `Content-Length` fields, or a comma list in one (even if all agree).
    #[error("more than one Content-Length")]
    SeveralLengths,
    /// Not 1 to 19 ASCII digits.
    #[error("Content-Length is not a plain decimal number")]
    BadLength,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// Any `Transfer-Encoding` other than exactly one field whose value is `chunked`.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedEncoding,
}

/// The framing of a client request.
pub(crate) fn request_framing(headers: &HeaderMap) -> Result<Framing, FramingError> {
    framing(headers)
}

/// The framing of an upstream response: the same rules, so a confused upstream cannot
/// desynchronise the client connection either.
pub(crate) fn response_framing(headers: &HeaderMap) -> Result<Framing, FramingError> {
    framing(headers)
}

/// 19 digits always fit in a u64 (its maximum has 20).
const MAX_DIGITS: usize = 19;

fn framing(headers: &HeaderMap) -> Result<Framing, FramingError> {
    let te: Vec<&[u8]> = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let cl: Vec<&[u8]> = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    match te.as_slice() {
        [] => {}
        [v] if trim_ows(v).eq_ignore_ascii_case(b"chunked") => {
            return if cl.is_empty() {
                Ok(Framing::Chunked)
            } else {
                Err(FramingError::LengthAndChunked)
            };
        }
        _ => return Err(FramingError::UnsupportedEncoding),
    }
    match cl.as_slice() {
        [] => Ok(Framing::Empty),
        [v] if v.contains(&b',') => Err(FramingError::SeveralLengths),
        [v] if !v.is_empty() && v.len() <= MAX_DIGITS && v.iter().all(u8::is_ascii_digit) => {
            // Digits only, so both conversions succeed; map errors anyway rather than panic.
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Framing::Length)
                .ok_or(FramingError::BadLength)
        }
        [_] => Err(FramingError::BadLength),
        _ => Err(FramingError::SeveralLengths),
    }
}

/// Without surrounding SP / HTAB (optional whitespace, RFC 9110 §5.6.3).
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether a raw HTTP/1 request head carries a `Content-Length` field. pingora drops
/// `Content-Length` from the parsed header when `Transfer-Encoding` is present (RFC 9112
/// §6.3), so a request that sent both can only be recognised in the bytes as received.
pub(crate) fn raw_head_has_content_length(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_length_is_found_in_the_raw_head() {
        use super::raw_head_has_content_length as has;
        assert!(has(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(has(b"POST / HTTP/1.1\r\ncontent-LENGTH:5\r\n\r\n"));
        assert!(!has(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n"
        ));
        assert!(
            !has(b"POST /content-length: HTTP/1.1\r\n\r\n"),
            "not in the request line"
        );
    }

    use super::*;
    use proptest::prelude::*;
    use FramingError::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        m
    }

    fn cl(v: &str) -> Result<Framing, FramingError> {
        request_framing(&map(&[("content-length", v.as_bytes())]))
    }

    fn te(v: &str) -> Result<Framing, FramingError> {
        request_framing(&map(&[("transfer-encoding", v.as_bytes())]))
    }

    #[test]
    fn content_length_vectors() {
        assert_eq!(request_framing(&HeaderMap::new()), Ok(Framing::Empty));
        assert_eq!(cl("5"), Ok(Framing::Length(5)));
        assert_eq!(cl("0"), Ok(Framing::Length(0)));
        assert_eq!(cl("0005"), Ok(Framing::Length(5)), "leading zeros allowed");
        assert_eq!(
            cl("9999999999999999999"),
            Ok(Framing::Length(9_999_999_999_999_999_999))
        );
        assert_eq!(cl("0000000000000000001"), Ok(Framing::Length(1)));
        for bad in [
            "",
            "+5",
            "-5",
            " 5",
            "5 ",
            "\t5",
            "0x5",
            "5a",
            "5.0",
            "1e3",
            "five",
            "5 5",
            "18446744073709551615", // u64::MAX, but 20 digits
            "00000000000000000001", // 20 digits
            "99999999999999999999999",
        ] {
            assert_eq!(cl(bad), Err(BadLength), "{bad:?}");
        }
        assert_eq!(
            request_framing(&map(&[("content-length", b"\xff")])),
            Err(BadLength)
        );
        for list in ["5,5", "5, 5", "5,", ",5", ",", "5,6"] {
            assert_eq!(cl(list), Err(SeveralLengths), "{list:?}");
        }
        let two_same = map(&[("content-length", b"5"), ("Content-Length", b"5")]);
        assert_eq!(request_framing(&two_same), Err(SeveralLengths));
        let two = map(&[("content-length", b"5"), ("content-length", b"6")]);
        assert_eq!(request_framing(&two), Err(SeveralLengths));
    }

    #[test]
    fn transfer_encoding_vectors() {
        for ok in [
            "chunked",
            "Chunked",
            "CHUNKED",
            " chunked",
            "chunked ",
            "\tchunked\t",
        ] {
            assert_eq!(te(ok), Ok(Framing::Chunked), "{ok:?}");
        }
        for bad in [
            "",
            "xchunked",
            "chunkedx",
            "chunked;x",
            "chunked; q=1",
            "gzip, chunked",
            "chunked, chunked",
            "chunked,",
            "identity",
            "gzip",
            "chun ked",
            "\"chunked\"",
        ] {
            assert_eq!(te(bad), Err(UnsupportedEncoding), "{bad:?}");
        }
        let two = map(&[
            ("transfer-encoding", b"chunked"),
            ("transfer-encoding", b"chunked"),
        ]);
        assert_eq!(request_framing(&two), Err(UnsupportedEncoding));
        let two = map(&[
            ("transfer-encoding", b"gzip"),
            ("transfer-encoding", b"chunked"),
        ]);
        assert_eq!(request_framing(&two), Err(UnsupportedEncoding));
        assert_eq!(
            request_framing(&map(&[("transfer-encoding", b"chunked\xff")])),
            Err(UnsupportedEncoding)
        );
    }

    #[test]
    fn both_headers_are_refused() {
        let both = map(&[("transfer-encoding", b"chunked"), ("content-length", b"5")]);
        assert_eq!(request_framing(&both), Err(LengthAndChunked));
        assert_eq!(response_framing(&both), Err(LengthAndChunked));
        let bad_both = map(&[("content-length", b"0"), ("transfer-encoding", b"gzip")]);
        assert_eq!(request_framing(&bad_both), Err(UnsupportedEncoding));
    }

    #[test]
    fn responses_follow_the_same_rules() {
        let r = |pairs: &[(&str, &[u8])]| response_framing(&map(pairs));
        assert_eq!(r(&[]), Ok(Framing::Empty));
        assert_eq!(r(&[("content-length", b"12")]), Ok(Framing::Length(12)));
        assert_eq!(
            r(&[("transfer-encoding", b"chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(r(&[("content-length", b"5, 5")]), Err(SeveralLengths));
        assert_eq!(
            r(&[("transfer-encoding", b"gzip, chunked")]),
            Err(UnsupportedEncoding)
        );
    }

    #[test]
    fn trim_ows_edges() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"  \t"), b"");
        assert_eq!(trim_ows(b" a b "), b"a b");
    }

    use crate::testing::proptest_cases as cases;

    /// Header values: any bytes `http::HeaderValue` accepts, biased towards digits,
    /// commas, spaces and the word `chunked`.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            "[0-9, \t+x-]{0,22}".prop_map(String::into_bytes),
            "[ \t]{0,2}(chunked|CHUNKED|gzip|identity)[ \t,;]{0,2}(chunked)?"
                .prop_map(String::into_bytes),
        ]
    }

    fn header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
        (
            proptest::sample::select(vec![
                "content-length",
                "Content-Length",
                "transfer-encoding",
                "Transfer-Encoding",
                "x-other",
            ]),
            value(),
        )
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn accepted_lengths_come_from_one_plain_field(
            fields in proptest::collection::vec(header(), 0..4)
        ) {
            let mut m = HeaderMap::new();
            for (k, v) in &fields {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v);
                }
            }
            let got = request_framing(&m);
            prop_assert_eq!(&got, &response_framing(&m));
            let cls: Vec<&[u8]> = m.get_all(CONTENT_LENGTH).iter().map(|v| v.as_bytes()).collect();
            let tes = m.get_all(TRANSFER_ENCODING).iter().count();
            match got {
                Ok(Framing::Length(n)) => {
                    prop_assert_eq!(cls.len(), 1);
                    prop_assert_eq!(tes, 0);
                    let digits = std::str::from_utf8(cls[0]).unwrap();
                    let stripped = digits.trim_start_matches('0');
                    let want = n.to_string();
                    prop_assert!(stripped == want || (n == 0 && stripped.is_empty()), "{digits} vs {n}");
                }
                Ok(Framing::Chunked) => {
                    prop_assert!(cls.is_empty());
                    prop_assert_eq!(tes, 1);
                }
                Ok(Framing::Empty) => prop_assert!(cls.is_empty() && tes == 0),
                Err(_) => prop_assert!(!cls.is_empty() || tes > 0),
            }
        }
    }
}
