//! Secrets in config: a literal, `{ env = "NAME" }` or `{ file = "path" }`.

use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Where a secret comes from, as written in the config file.
#[derive(Clone)]
pub enum SecretSource {
    Literal(String),
    Env { env: String },
    File { file: String },
}

/// Hand-written rather than `untagged`: an untagged enum silently ignores extra keys
/// (`{ env = "A", file = "b" }` would read the env var and drop the file), and its error
/// names no key. Here a table must hold exactly one of `env` / `file` and nothing else.
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"a secret: a string, { env = "NAME" } or { file = "path" }"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let mut found: Option<SecretSource> = None;
        while let Some(key) = map.next_key::<String>()? {
            let source = match key.as_str() {
                "env" => SecretSource::Env {
                    env: map.next_value()?,
                },
                "file" => SecretSource::File {
                    file: map.next_value()?,
                },
                other => {
                    return Err(de::Error::custom(format_args!(
                        "unknown key `{}` in a secret (expected `env` or `file`)",
                        other.escape_debug()
                    )))
                }
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes exactly one of `env` or `file`",
                ));
            }
            found = Some(source);
        }
        found.ok_or_else(|| de::Error::custom("a secret table needs `env` or `file`"))
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretSource::Env { env } => write!(f, "Env({env})"),
            SecretSource::File { file } => write!(f, "File({file})"),
        }
    }
}

/// A resolved secret. Its `Debug` is redacted so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretSource {
    /// Reads the secret; `env` looks variables up (injected so tests need no process env),
    /// relative files are taken from `base_dir` (the config file's folder).
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Literal(s) => s.clone(),
            SecretSource::Env { env: name } => {
                env(name).ok_or_else(|| SecretError::EnvUnset { name: name.clone() })?
            }
            SecretSource::File { file } => {
                let path = base_dir.join(file);
                std::fs::read_to_string(&path)
                    .map_err(|source| SecretError::Unreadable {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(value))
    }
}

/// Why a configured secret could not be read (the message names the variable or file,
/// never a value).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{name}` is not set")]
    EnvUnset { name: String },
    #[error("cannot read secret file `{}`: {source}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the secret is empty")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_and_debug_redacts() {
        let env = |k: &str| (k == "SET").then(|| "from-env".to_string());
        let dir = std::env::temp_dir();
        let file = dir.join(format!("loopgate-secret-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let lit = SecretSource::Literal("lit".into());
        assert_eq!(lit.resolve(&env, &dir).unwrap().expose(), "lit");
        let e = SecretSource::Env { env: "SET".into() };
        assert_eq!(e.resolve(&env, &dir).unwrap().expose(), "from-env");
        let missing = SecretSource::Env {
            env: "UNSET".into(),
        };
        assert!(missing
            .resolve(&env, &dir)
            .unwrap_err()
            .to_string()
            .contains("UNSET"));
        let f = SecretSource::File {
            file: file.file_name().unwrap().to_string_lossy().into(),
        };
        let s = f.resolve(&env, &dir).unwrap();
        assert_eq!(s.expose(), "from-file");
        assert!(!format!("{s:?} {lit:?}").contains("from-file"));
        assert!(!format!("{lit:?}").contains("lit)"));
        std::fs::remove_file(file).unwrap();
    }

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        s: SecretSource,
    }

    #[test]
    fn a_secret_table_holds_exactly_one_known_key() {
        let ok = |t: &str| toml::from_str::<Holder>(t).map(|h| format!("{:?}", h.s));
        assert_eq!(ok(r#"s = "x""#).unwrap(), "Literal(<redacted>)");
        assert_eq!(ok(r#"s = { env = "A" }"#).unwrap(), "Env(A)");
        assert_eq!(ok(r#"s = { file = "f" }"#).unwrap(), "File(f)");
        for (bad, says) in [
            (r#"s = { env = "A", file = "b" }"#, "exactly one"),
            (r#"s = { env = "A", fiel = "b" }"#, "unknown key `fiel`"),
            (r#"s = { vault = "x" }"#, "unknown key `vault`"),
            (r#"s = {}"#, "needs `env` or `file`"),
            (r#"s = 5"#, "a secret"),
        ] {
            let e = ok(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
