//! Configuration: TOML → [`RawConfig`](raw::RawConfig) → validated [`Config`].
//!
//! Parsing and validation are separate steps. Validation collects every problem with its
//! key path (`routes[1].upstream: ...`) so an operator fixes them all in one go, and
//! unknown keys are errors (a typo must not silently fall back to a default).

mod error;
mod model;
mod raw;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use validate::decode_session_secret;
use validate::Validator;

/// Default for `server.max_connections`: far above what one replica serves, low enough
/// that a connection flood cannot exhaust memory (an idle keep-alive connection costs
/// ~43 KB, `bench/RESULTS.md`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Minimum decoded length of a session secret.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;

/// Reads and validates the config file at `path`, with secrets from the process env.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base, &|k| std::env::var(k).ok())
}

/// Parses and validates config text. `base_dir` anchors relative paths; `env` looks up
/// environment variables (injected so that tests stay pure).
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let de = toml::Deserializer::new(text);
    let raw: raw::RawConfig = match serde_ignored::deserialize(de, |path| {
        errors.push(ConfigError {
            key: key_path(&path),
            message: "unknown key".into(),
        })
    }) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(ConfigError {
                key: "(syntax)".into(),
                message: e.to_string().trim().replace('\n', " "),
            });
            return Err(ConfigErrors(errors));
        }
    };
    let mut v = Validator {
        errors,
        env,
        base_dir,
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config.expect("no errors means a complete config"))
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// The key path of an ignored (unknown) key, written as every other message writes it:
/// `routes[0].name`. Built from the path's structure rather than its dotted `Display`,
/// so a quoted key holding a dot or only digits (`"a.b"`, `"0"`) is not misread as
/// nesting or an index; such keys are shown quoted, as TOML would need them.
fn key_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            let bare = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let key = if bare {
                key.clone()
            } else {
                format!("{key:?}")
            };
            if parent.is_empty() {
                key
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

#[cfg(test)]
mod tests;
