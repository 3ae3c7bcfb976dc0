//! The client's `Authorization: Bearer` credential (RFC 6750 §2.1), read strictly: one
//! field, one token, nothing a second reader could interpret differently.

use http::HeaderMap;

/// Why an `Authorization` header is not one usable Bearer credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadCredential {
    #[error("several Authorization fields")]
    Several,
    #[error("the Authorization field is not visible ASCII")]
    NotText,
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    #[error("the Bearer token is empty or holds a space")]
    Malformed,
}

/// The client's Bearer token: `Ok(None)` without an `Authorization` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, BadCredential> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(BadCredential::Several);
    }
    let value = first.to_str().map_err(|_| BadCredential::NotText)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() || token.contains(' ') {
                Err(BadCredential::Malformed)
            } else {
                Ok(Some(token))
            }
        }
        _ => Err(BadCredential::NotBearer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_one_bearer_token() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&[b"Bearer abc"])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&[b"bearer  abc "])), Ok(Some("abc")));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a", b"Bearer b"])),
            Err(BadCredential::Several)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Basic dXNlcjpwdw=="])),
            Err(BadCredential::NotBearer)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer"])),
            Err(BadCredential::NotBearer)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer "])),
            Err(BadCredential::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a b"])),
            Err(BadCredential::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Bearer \xff"])),
            Err(BadCredential::NotText)
        );
    }
}
