//! Config parsing and validation tests (test code only: long because every section's
//! keys, defaults and error messages get their cases, plus the property tests).

use std::path::Path;
use std::time::Duration;

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
        c.schools[0].registration_file,
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
    assert_eq!(
        c.schools[0].client_secret.as_ref().unwrap().expose(),
        "client-secret"
    );
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
    assert!(c.schools[0].jwt_secret.is_none() && c.schools[0].school_id.is_none());

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
    assert_eq!(c.schools[0].school_id.as_deref(), Some("4242"));
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

#[test]
fn odd_unknown_keys_are_named_as_written_and_errors_stay_on_one_line() {
    let text = MINIMAL.replace(
        "[server]\n",
        "[server]\n\"a.b\" = 1\n\"0\" = 2\n\"evil\\nline\\u001b[31m\" = 3\n",
    );
    let e = parse_str(&text).unwrap_err();
    assert!(e.has("server.\"a.b\""), "{e:?}");
    assert!(e.has("server.0"), "{e:?}"); // a bare key; indices read `[0]`
    let shown = e.to_string();
    assert_eq!(shown.lines().count(), e.0.len(), "{shown}");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    let text = MINIMAL.replace(
        "secrets = [{ env = \"LG_SECRET\" }]",
        "secrets = [{ env = \"LG_SECRET\", file = \"s\" }]",
    );
    let shown = parse_str(&text).unwrap_err().to_string();
    assert!(shown.contains("exactly one of `env` or `file`"), "{shown}");
}

mod properties {
    use super::*;
    use crate::testing::proptest_cases as cases;
    use proptest::prelude::*;

    /// Where an unknown key may be put in MINIMAL, and the path it must be reported at.
    const SECTIONS: &[(&str, &str)] = &[
        ("[server]\n", "server"),
        ("[loopwise]\n", "loopwise"),
        ("[session]\n", "session"),
        ("name = \"app\"\n", "routes[0]"),
        ("name = \"loopwise-api\"\n", "routes[1]"),
    ];

    fn assert_one_line_each(e: &ConfigErrors) -> Result<(), TestCaseError> {
        let shown = e.to_string();
        prop_assert_eq!(shown.lines().count(), e.0.len(), "{}", shown);
        prop_assert!(!shown.chars().any(|c| c.is_control() && c != '\n'));
        Ok(())
    }

    proptest! {
        #![proptest_config(cases())]

        /// Any key the model does not know, with any name TOML can quote, anywhere, is
        /// the one error and is named at its exact path.
        #[test]
        fn an_unknown_key_is_reported_at_its_path(
            section in 0..SECTIONS.len(),
            name in "[a-z0-9_.\\- \\n\\x1b\"]{1,12}",
        ) {
            let (anchor, at) = SECTIONS[section];
            let known = ["listen", "public_url", "issuer", "client_id", "scopes", "secrets",
                "name", "path", "upstream", "auth", "strip_prefix", "preserve_host"];
            prop_assume!(!known.contains(&name.as_str()));
            let quoted = toml::Value::String(name.clone()).to_string();
            let text = MINIMAL.replacen(anchor, &format!("{anchor}{quoted} = 1\n"), 1);
            match parse_str(&text) {
                Ok(_) => prop_assert!(false, "{quoted} accepted"),
                Err(e) => {
                    assert_one_line_each(&e)?;
                    // A known key (in another spelling) may give a type error instead.
                    if e.0.iter().all(|x| x.message == "unknown key") {
                        let bare = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                        let want = if bare { format!("{at}.{name}") } else { format!("{at}.{name:?}") };
                        prop_assert_eq!(e.0.len(), 1);
                        prop_assert_eq!(&e.0[0].key, &want);
                    }
                }
            }
        }

        /// Lines of MINIMAL deleted, repeated or with their value replaced: never a panic,
        /// and every problem is one line with a key.
        #[test]
        fn mangled_configs_never_panic(
            edits in proptest::collection::vec((0usize..40, 0u8..3, "\\PC{0,12}"), 1..4),
        ) {
            let mut lines: Vec<String> = MINIMAL.lines().map(String::from).collect();
            for (at, kind, junk) in edits {
                let i = at % lines.len();
                match kind {
                    0 => { lines.remove(i); }
                    1 => { let l = lines[i].clone(); lines.insert(i, l); }
                    _ => {
                        if let Some((k, _)) = lines[i].split_once(" = ") {
                            lines[i] = format!("{k} = {}", toml::Value::String(junk));
                        }
                    }
                }
                if lines.is_empty() { lines.push(String::new()); }
            }
            if let Err(e) = parse_str(&lines.join("\n")) {
                assert_one_line_each(&e)?;
                prop_assert!(e.0.iter().all(|x| !x.key.is_empty()));
            }
        }

        /// Arbitrary text: never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Err(e) = parse_str(&text) {
                assert_one_line_each(&e)?;
            }
        }
    }
}

#[test]
fn redis_is_optional_and_validated_key_by_key() {
    assert!(parse_str(MINIMAL).unwrap().redis.is_none());
    let with = |table: &str| format!("{MINIMAL}\n[redis]\n{table}\n");
    let c = parse_str(&with("url = \"redis://10.0.0.5:6379/2\"")).unwrap();
    let r = c.redis.unwrap();
    assert_eq!(r.target, RedisTarget::Url("redis://10.0.0.5:6379/2".into()));
    assert_eq!(r.key_prefix, "loopgate:");
    assert_eq!(r.timeout, Duration::from_millis(500));
    assert!(r.password.is_none() && r.ca_file.is_none());
    let c = parse_str(&with(
        "url = \"rediss://redis.internal\"\npassword = { env = \"LG_SECRET\" }\nkey_prefix = \"gw1:\"\ntimeout = \"2s\"",
    ))
    .unwrap();
    let r = c.redis.unwrap();
    assert_eq!(r.password.unwrap().expose(), SECRET);
    assert_eq!(
        (r.key_prefix.as_str(), r.timeout),
        ("gw1:", Duration::from_secs(2))
    );

    for (table, key) in [
        ("key_prefix = \"x\"", "redis.url"),
        ("url = \"http://redis:6379\"", "redis.url"),
        ("url = \"redis://h/abc\"", "redis.url"),
        (
            "url = \"redis://h\"\nca_file = \"/nonexistent.pem\"",
            "redis.ca_file",
        ),
        (
            "url = \"redis://h\"\npassword = { env = \"UNSET\" }",
            "redis.password",
        ),
        ("url = \"redis://h\"\ntimeout = \"soon\"", "redis.timeout"),
        (
            "url = \"redis://h\"\nkey_prefix = \"a b\"",
            "redis.key_prefix",
        ),
        ("url = \"redis://h\"\ncluster = [\"redis://a\"]", "redis"),
        ("cluster = []", "redis.cluster"),
        (
            "cluster = [\"redis://a\", \"http://b\"]",
            "redis.cluster[1]",
        ),
        ("cluster = [\"redis://a\", \"rediss://b\"]", "redis"),
        (
            "sentinel = { nodes = [\"redis://s:26379\"] }",
            "redis.sentinel.master",
        ),
        ("sentinel = { master = \"m\" }", "redis.sentinel.nodes"),
        (
            "sentinel = { master = \"m\", nodes = [\"redis://s\"], quorum = 2 }",
            "redis.sentinel.quorum",
        ),
    ] {
        let e = parse_str(&with(table)).unwrap_err();
        assert!(e.has(key), "{table}: {e}");
    }
    let c = parse_str(&with(
        "sentinel = { master = \"mymaster\", nodes = [\"redis://10.0.0.5:26379\", \"redis://10.0.0.6:26379\"] }",
    ))
    .unwrap();
    assert_eq!(
        c.redis.unwrap().target,
        RedisTarget::Sentinel {
            master: "mymaster".into(),
            nodes: vec![
                "redis://10.0.0.5:26379".into(),
                "redis://10.0.0.6:26379".into()
            ],
        }
    );
    let c = parse_str(&with(
        "cluster = [\"rediss://10.0.0.7:6379\", \"rediss://10.0.0.8:6379\"]",
    ))
    .unwrap();
    let r = c.redis.unwrap();
    assert!(r.target.tls());
    assert!(matches!(r.target, RedisTarget::Cluster(ref n) if n.len() == 2));
    // A password in a bad url is not repeated in the error.
    let e = parse_str(&with("url = \"ftp://user:hunter2@h\"")).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse_str(&with("url = \"redis://user:hunter2@[::1\"")).unwrap_err();
    assert!(
        e.has("redis.url") && !e.to_string().contains("hunter2"),
        "{e}"
    );
}

#[test]
fn the_session_store_is_cookie_by_default_and_redis_needs_redis() {
    assert_eq!(
        parse_str(MINIMAL).unwrap().session.store,
        SessionStoreKind::Cookie
    );
    let redis_store = MINIMAL.replace("[session]\n", "[session]\nstore = \"redis\"\n");
    let e = parse_str(&redis_store).unwrap_err();
    assert!(
        e.has("session.store") && e.to_string().contains("[redis]"),
        "{e}"
    );
    let ok = format!("{redis_store}\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n");
    assert_eq!(
        parse_str(&ok).unwrap().session.store,
        SessionStoreKind::Redis
    );
    let bad = MINIMAL.replace("[session]\n", "[session]\nstore = \"memcached\"\n");
    assert!(parse_str(&bad).unwrap_err().has("session.store"));
}

#[test]
fn the_admin_token_is_optional_a_secret_and_long_enough() {
    assert!(parse_str(MINIMAL).unwrap().server.admin_token.is_none());
    let with = |v: &str| MINIMAL.replace("[loopwise]", &format!("admin_token = {v}\n\n[loopwise]"));
    let c = parse_str(&with("{ env = \"LG_SECRET\" }")).unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), SECRET);
    for bad in ["\"short\"", "{ env = \"UNSET\" }"] {
        let e = parse_str(&with(bad)).unwrap_err();
        assert!(e.has("server.admin_token"), "{bad}: {e}");
        assert!(
            !e.to_string().contains("short\""),
            "the value is not repeated: {e}"
        );
    }
}

/// Two schools and routes of each, of both and public.
const TWO_SCHOOLS: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[[loopwise]]
name = "north"
display_name = "North High"
issuer = "https://north.loopwise.com"
client_id = "n1"

[[loopwise]]
name = "south"
issuer = "https://south.example.edu"

[session]
secrets = [{ env = "LG_SECRET" }]

[[routes]]
name = "north"
path = "/north"
upstream = "http://127.0.0.1:9000"
loopwise = "north"

[[routes]]
name = "both"
path = "/"
upstream = "http://127.0.0.1:9000"
loopwise = ["south", "north"]

[[routes]]
name = "open"
path = "/public"
upstream = "http://127.0.0.1:9000"
auth = "public"
"#;

#[test]
fn several_schools_each_with_a_name_and_their_own_registration_file() {
    let c = parse_str(TWO_SCHOOLS).unwrap();
    let names: Vec<&str> = c.schools.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["north", "south"]);
    assert_eq!(c.schools[0].display_name, "North High");
    assert_eq!(c.schools[1].display_name, "south", "defaults to the name");
    assert_eq!(
        c.schools[1].registration_file,
        Path::new("/etc/loopgate/loopgate-registration-south.json")
    );
    assert_eq!(c.routes[0].loopwise, ["north"]);
    assert_eq!(
        c.routes[1].loopwise,
        ["south", "north"],
        "the chooser's order"
    );
    assert!(c.routes[2].loopwise.is_empty());
    // One [loopwise] table is the `default` school, as before schools had names.
    let one = parse_str(MINIMAL).unwrap();
    assert_eq!(one.schools.len(), 1);
    assert_eq!(one.schools[0].name, crate::oauth::DEFAULT_SCHOOL);
    assert!(one.routes.iter().all(|r| r.loopwise == ["default"]));
}

fn errors_of(text: &str) -> Vec<String> {
    parse_str(text)
        .unwrap_err()
        .0
        .iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect()
}

fn has(errors: &[String], key: &str, part: &str) -> bool {
    errors
        .iter()
        .any(|e| e.starts_with(&format!("{key}: ")) && e.contains(part))
}

#[test]
fn school_mistakes_name_their_key() {
    // No `loopwise` on a route while there are several schools.
    let e = errors_of(&TWO_SCHOOLS.replace("loopwise = \"north\"\n", ""));
    assert!(
        has(&e, "routes[0].loopwise", "several schools (north, south)"),
        "{e:?}"
    );
    // A name no school has, and a public route naming one.
    let e = errors_of(
        &TWO_SCHOOLS
            .replace("loopwise = \"north\"", "loopwise = \"west\"")
            .replace(
                "auth = \"public\"",
                "auth = \"public\"\nloopwise = \"north\"",
            ),
    );
    assert!(has(&e, "routes[0].loopwise", "`west`"), "{e:?}");
    assert!(
        has(&e, "routes[2].loopwise", "authenticates no one"),
        "{e:?}"
    );
    // Names: missing, duplicated, malformed, or colliding with a cookie chunk.
    let e = errors_of(&TWO_SCHOOLS.replace("name = \"south\"\n", ""));
    assert!(has(&e, "loopwise[1].name", "is required"), "{e:?}");
    let e = errors_of(&TWO_SCHOOLS.replace("name = \"south\"", "name = \"north\""));
    assert!(has(&e, "loopwise[1].name", "another school"), "{e:?}");
    let e = errors_of(&TWO_SCHOOLS.replace("name = \"south\"", "name = \"so uth\""));
    assert!(has(&e, "loopwise[1].name", "letters, digits"), "{e:?}");
    let e = errors_of(&TWO_SCHOOLS.replace("name = \"south\"", "name = \"north_1\""));
    assert!(
        has(&e, "loopwise[1].name", "chunk of school `north`"),
        "{e:?}"
    );
    // The same issuer twice, the same registration file twice, an unknown key.
    let e = errors_of(&TWO_SCHOOLS.replace(
        "https://south.example.edu\"",
        "https://north.loopwise.com\"\nregistration_file = \"loopgate-registration-north.json\"\ncolour = 1",
    ));
    assert!(
        has(&e, "loopwise[1].issuer", "school `north` has this issuer"),
        "{e:?}"
    );
    assert!(
        has(&e, "loopwise[1].registration_file", "same file"),
        "{e:?}"
    );
    assert!(has(&e, "loopwise[1].colour", "unknown key"), "{e:?}");
    // Keys of one [loopwise] table keep their plain path.
    let e = errors_of(&MINIMAL.replace("client_id = \"abc123\"", "client_id = \"\"\ncolour = 1"));
    assert!(has(&e, "loopwise.client_id", "non-empty"), "{e:?}");
    assert!(has(&e, "loopwise.colour", "unknown key"), "{e:?}");
    let e = errors_of(&format!(
        "loopwise = 3\n{}",
        MINIMAL.replace("[loopwise]", "[ignored]")
    ));
    assert!(has(&e, "loopwise", "expected a [loopwise] table"), "{e:?}");
}

#[test]
fn an_openid_school_may_have_a_path_claims_and_authorize_params() {
    let text = MINIMAL
        .replace(
            "issuer = \"http://127.0.0.1:8081\"",
            "issuer = \"http://127.0.0.1:8081/realms/x/\"\nauthorize_params = { prompt = \"consent\", resource = \"https://api\" }\nclaims = { roles = \"groups\" }",
        )
        .replace("scopes = [\"read\", \"courses:read\"]", "scopes = [\"openid\", \"offline_access\"]");
    let c = parse_str(&text).unwrap();
    let s = &c.schools[0];
    assert_eq!(
        s.issuer, "http://127.0.0.1:8081/realms/x",
        "trailing / dropped"
    );
    assert_eq!(
        s.authorize_params,
        [
            ("prompt".to_string(), "consent".to_string()),
            ("resource".to_string(), "https://api".to_string())
        ]
    );
    assert_eq!(s.claims.roles, "groups");
    assert_eq!(
        s.claims.school, "org_id",
        "unnamed claims keep their defaults"
    );
    let e = errors_of(&text.replace("prompt = \"consent\"", "state = \"fixed\""));
    assert!(
        has(
            &e,
            "loopwise.authorize_params",
            "sets this parameter itself"
        ),
        "{e:?}"
    );
    let e = errors_of(&text.replace("/realms/x/", "/realms/x?tenant=1"));
    assert!(has(&e, "loopwise.issuer", "no query"), "{e:?}");
    let e = errors_of(&text.replace("roles = \"groups\"", "roles = \"\""));
    assert!(has(&e, "loopwise.claims.roles", "claim name"), "{e:?}");
}

#[test]
fn registration_check_defaults_to_five_minutes_and_zero_turns_it_off() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.schools[0].registration_check, Duration::from_secs(300));
    let with = |v: &str| {
        MINIMAL.replace(
            "client_id = \"abc123\"",
            &format!("client_id = \"abc123\"\nregistration_check = \"{v}\""),
        )
    };
    assert_eq!(
        parse_str(&with("0s")).unwrap().schools[0].registration_check,
        Duration::ZERO
    );
    let e = parse_str(&with("often")).unwrap_err();
    assert!(e.to_string().contains("loopwise.registration_check"), "{e}");
}
