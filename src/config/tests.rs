use std::path::Path;

use super::*;

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

fn env(k: &str) -> Option<String> {
    match k {
        "LG_SECRET" => Some(SECRET.into()),
        "LG_CLIENT_SECRET" => Some("client-secret".into()),
        _ => None,
    }
}

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new("/etc/loopgate"), &env)
}

const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[loopwise]
issuer = "http://127.0.0.1:8081"
client_id = "abc123"
scopes = ["read", "courses:read"]

[session]
secrets = [{ env = "LG_SECRET" }]

[[routes]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:9000"
auth = "login"

[[routes]]
name = "loopwise-api"
path = "/loopwise/"
upstream = "https://demo.loopwise.com"
strip_prefix = true
preserve_host = false
"#;

#[test]
fn the_issue_example_parses_with_documented_defaults() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.server.prefix, "/oauth2");
    assert_eq!(
        c.server.callback_url(),
        "http://127.0.0.1:8080/oauth2/callback"
    );
    assert!(!c.server.secure);
    assert_eq!(c.session.cookie_name, "loopgate_session");
    assert_eq!(c.session.lifetime, Duration::from_secs(7 * 86400));
    assert_eq!(c.session.secrets[0].len(), 32);
    assert_eq!(
        c.loopwise.registration_file,
        Path::new("/etc/loopgate/loopgate-registration.json")
    );
    assert_eq!(c.routes.len(), 2);
    let api = &c.routes[1];
    assert!(api.strip_prefix && !api.preserve_host && api.upstreams[0].tls);
    assert_eq!(api.upstreams[0].authority(), "demo.loopwise.com");
    assert_eq!(c.routes[0].upstreams[0].authority(), "127.0.0.1:9000");
    assert!(c.routes[0].preserve_host);
}

#[test]
fn https_public_url_gets_the_host_prefix() {
    let text = MINIMAL.replace(
        "public_url = \"http://127.0.0.1:8080\"",
        "public_url = \"https://gw.example\"",
    );
    let c = parse_str(&text).unwrap();
    assert!(c.server.secure);
    assert_eq!(c.session.cookie_name, "__Host-loopgate_session");
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
[server]
listen = "nowhere"
prefix = "oauth2/"
typo_key = 1

[loopwise]
issuer = "http://loopwise.example.com"
scopes = ["read", "bad\"scope"]
client_secret = { env = "NOPE" }

[session]
secrets = ["c2hvcnQ=", "not base64 !!", { env = "MISSING_VAR" }, { file = "no/such/file" }]
cookie_name = "__bad"
lifetime = "forever"

[[routes]]
name = "a b"
path = "no-slash"
upstream = "ftp://x"
auth = "magic"

[[routes]]
name = "dup"
path = "/x/../y"
upstream = "http://127.0.0.1:1/base"

[[routes]]
path = "/oauth2/inner"
upstream = "http://127.0.0.1:2"
"#;
    let e = parse_str(text).unwrap_err();
    for key in [
        "server.typo_key",
        "server.listen",
        "server.prefix",
        "loopwise.issuer",
        "loopwise.scopes[1]",
        "loopwise.client_secret",
        "session.secrets[0]",
        "session.secrets[1]",
        "session.secrets[2]",
        "session.secrets[3]",
        "session.cookie_name",
        "session.lifetime",
        "routes[0].name",
        "routes[0].path",
        "routes[0].upstream",
        "routes[0].auth",
        "routes[1].path",
        "routes[1].upstream",
        "routes[2].name",
    ] {
        assert!(e.has(key), "missing error for {key}; got:\n{e}");
    }
    let text = e.to_string();
    assert!(
        text.contains("session.secrets[2]: environment variable `MISSING_VAR` is not set"),
        "{text}"
    );
    assert!(
        text.contains("server.listen: `nowhere` is not valid"),
        "{text}"
    );
    assert!(
        text.contains("session.secrets[0]: decodes to 5 bytes"),
        "{text}"
    );
    // Secrets never appear in messages.
    assert!(!text.contains(SECRET));
}

#[test]
fn unknown_keys_anywhere_are_errors() {
    let text = MINIMAL.replace("auth = \"login\"", "auth = \"login\"\nupstreams = \"x\"")
        + "\n[sesion]\nsecrets = []\n";
    let e = parse_str(&text).unwrap_err();
    assert!(e.has("routes[0].upstreams"), "{e}");
    assert!(e.has("sesion"), "{e}");
}

#[test]
fn syntax_and_type_errors_name_the_problem() {
    let e = parse_str("[server\nlisten = 1").unwrap_err();
    assert!(e.0[0].key == "(syntax)");
    let e =
        parse_str(&MINIMAL.replace("strip_prefix = true", "strip_prefix = \"yes\"")).unwrap_err();
    assert!(e.to_string().contains("strip_prefix"), "{e}");
}

#[test]
fn tied_paths_and_gateway_overlaps_are_rejected() {
    let text = MINIMAL.replace("path = \"/loopwise/\"", "path = \"/\"");
    assert!(parse_str(&text).unwrap_err().has("routes[1].path"));
    let text = MINIMAL.replace("path = \"/loopwise/\"", "path = \"/oauth2\"");
    assert!(parse_str(&text).unwrap_err().has("routes[1].path"));
}

#[test]
fn client_secret_needs_a_client_id_and_resolves() {
    let with = MINIMAL.replace(
        "client_id = \"abc123\"",
        "client_id = \"abc123\"\nclient_secret = { env = \"LG_CLIENT_SECRET\" }",
    );
    let c = parse_str(&with).unwrap();
    assert_eq!(c.loopwise.client_secret.unwrap().expose(), "client-secret");
    let without = MINIMAL.replace("client_id = \"abc123\"", "client_secret = \"x\"");
    assert!(parse_str(&without)
        .unwrap_err()
        .has("loopwise.client_secret"));
}

#[test]
fn session_secrets_accept_both_base64_alphabets() {
    let url_safe = "_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-";
    assert_eq!(decode_session_secret(url_safe).unwrap().len(), 33);
    assert!(decode_session_secret(SECRET).is_ok());
    assert!(decode_session_secret("AAAA").is_err());
}

#[test]
fn http_issuers_are_only_for_loopback_unless_allowed() {
    let remote = MINIMAL.replace("http://127.0.0.1:8081", "http://lw.internal");
    assert!(parse_str(&remote).unwrap_err().has("loopwise.issuer"));
    let allowed = remote.replace(
        "client_id = \"abc123\"",
        "client_id = \"abc123\"\nallow_http = true",
    );
    assert!(parse_str(&allowed).is_ok());
}

#[test]
fn token_settings_have_documented_defaults_and_are_checked() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.session.refresh_before, Duration::from_secs(60));
    assert_eq!(c.session.refresh_grace, Duration::from_secs(300));
    assert_eq!(c.cache.ttl, Duration::from_secs(60));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(10));
    assert_eq!(c.cache.max_entries, 100_000);
    assert!(c.loopwise.jwt_secret.is_none() && c.loopwise.school_id.is_none());

    let text = MINIMAL.replace("auth = \"login\"", "auth = \"api\"\naccept_bearer = true")
        + "\n[cache]\nmax_entries = 0\nttl = \"soon\"\n";
    let text = text.replace(
        "client_id = \"abc123\"",
        "client_id = \"abc123\"\njwt_secret = \"short\"\nschool_id = [1]",
    );
    let e = parse_str(&text).unwrap_err();
    for key in [
        "routes[0].accept_bearer",
        "cache.max_entries",
        "cache.ttl",
        "loopwise.jwt_secret",
        "loopwise.school_id",
    ] {
        assert!(e.has(key), "{key}: {e}");
    }
    let ok = MINIMAL
        .replace("auth = \"login\"", "auth = \"api\"")
        .replace(
            "client_id = \"abc123\"",
            "client_id = \"abc123\"\njwt_secret = \"0123456789abcdef0123\"\nschool_id = 4242",
        );
    let c = parse_str(&ok).unwrap();
    assert_eq!(c.routes[0].auth, AuthKind::Api);
    assert_eq!(c.loopwise.school_id.as_deref(), Some("4242"));
}

#[test]
fn routes_tie_only_on_the_same_host_and_path() {
    let base = MINIMAL.replace(
        "path = \"/loopwise/\"",
        "path = \"/\"\nhost = \"a.example.com\"",
    );
    assert!(parse_str(&base).is_ok(), "same path, different host: fine");
    let tie = base.replace(
        "name = \"app\"\npath = \"/\"",
        "name = \"app\"\nhost = \"A.example.com\"\npath = \"/\"",
    );
    assert!(parse_str(&tie).unwrap_err().has("routes[1].path"));
    let lists = MINIMAL.replace(
        "upstream = \"http://127.0.0.1:9000\"",
        "upstream = [\"http://127.0.0.1:9000\", \"https://127.0.0.1:9001\"]\nhealth_check = { path = \"nope\", healthy_threshold = 0 }\nroles = [\"teacher\"]\nskip_auth_methods = [\"OPTIONS\", \"NOT A METHOD\"]\nrewrite = \"/x/../y\"",
    );
    let e = parse_str(&lists).unwrap_err();
    for key in [
        "routes[0].upstream",
        "routes[0].health_check.path",
        "routes[0].health_check.healthy_threshold",
        "routes[0].skip_auth_methods[1]",
        "routes[0].rewrite",
    ] {
        assert!(e.has(key), "{key}: {e}");
    }
    let ok = MINIMAL.replace(
        "upstream = \"http://127.0.0.1:9000\"",
        "upstream = [\"http://127.0.0.1:9000\", \"http://127.0.0.1:9001\"]\nhealth_check = { path = \"/healthz\" }\nscopes = [\"read\"]\nroles = [\"teacher\"]\nschools = [4242, \"17\"]\nskip_auth_methods = [\"options\"]",
    );
    let c = parse_str(&ok).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.upstreams.len(), 2);
    assert_eq!(
        r.health_check.as_ref().unwrap().interval,
        Duration::from_secs(5)
    );
    assert_eq!(r.requirements.schools, ["4242", "17"]);
    assert_eq!(r.skip_auth_methods, [http::Method::OPTIONS]);
}

#[test]
fn lifecycle_files_default_to_tmp_or_the_systemd_runtime_directory() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.server.shutdown_delay, Duration::ZERO);
    assert_eq!(c.server.pid_file, Path::new("/tmp/loopgate.pid"));
    assert_eq!(
        c.server.upgrade_sock,
        Path::new("/tmp/loopgate-upgrade.sock")
    );
    let systemd = |k: &str| match k {
        "RUNTIME_DIRECTORY" => Some("/run/loopgate:/run/other".to_string()),
        _ => env(k),
    };
    let c = parse(MINIMAL, Path::new("/etc/loopgate"), &systemd).unwrap();
    assert_eq!(c.server.pid_file, Path::new("/run/loopgate/loopgate.pid"));
    assert_eq!(
        c.server.upgrade_sock,
        Path::new("/run/loopgate/loopgate-upgrade.sock")
    );
    let text = MINIMAL.replace(
        "[server]\n",
        &format!(
            "[server]\nshutdown_delay = \"5s\"\npid_file = \"run/lg.pid\"\nupgrade_sock = \"/{}\"\n",
            "x".repeat(120)
        ),
    );
    let errs = parse_str(&text).unwrap_err().to_string();
    assert!(errs.contains("server.upgrade_sock"), "{errs}");
    assert!(errs.contains("at most 107 bytes"), "{errs}");
    let ok = MINIMAL.replace(
        "[server]\n",
        "[server]\nshutdown_delay = \"5s\"\npid_file = \"run/lg.pid\"\n",
    );
    let c = parse_str(&ok).unwrap();
    assert_eq!(c.server.shutdown_delay, Duration::from_secs(5));
    // Relative paths are relative to the config file, like every other path.
    assert_eq!(c.server.pid_file, Path::new("/etc/loopgate/run/lg.pid"));
}
