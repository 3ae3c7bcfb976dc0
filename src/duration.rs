//! Durations as written in configs and flags: `"60s"`, `"7d"`, `"1h 30m"`, or bare seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration (write e.g. \"60s\", \"15m\", \"2h\", \"7d\")")]
pub(crate) struct DurationError {
    pub input: String,
}

pub(crate) fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DurationError {
                input: input.to_string(),
            });
    }
    humantime::parse_duration(s).map_err(|_| DurationError {
        input: input.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("7200").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_garbage_naming_it() {
        let e = parse("soon").unwrap_err();
        assert!(e.to_string().contains("`soon`"));
        assert!(parse("").is_err());
        assert!(parse("-5s").is_err());
    }
}
