//! The `loopgate` binary itself: flags are validated with clear messages and exit 64,
//! and `loopgate emulator` serves on the address it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_loopgate");

#[test]
fn bad_emulator_flags_exit_64_naming_the_flag() {
    let out = Command::new(BIN)
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--auto-approve",
            "--auto-user",
            "mallory",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auto-user") && err.contains("mallory"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["emulator", "--client", "no-redirect-uri"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--client"), "{err}");

    let out = Command::new(BIN)
        .args(["emulator", "--access-token-ttl", "soon"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}

#[tokio::test]
async fn emulator_subcommand_serves_metadata_on_the_printed_address() {
    let mut child = Command::new(BIN)
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--issuer",
            "http://school.test/",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .nth(4)
        .unwrap_or_else(|| panic!("unexpected banner: {line}"))
        .to_string();
    let m: serde_json::Value = reqwest::get(format!(
        "http://{addr}/.well-known/oauth-authorization-server"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(m["issuer"], "http://school.test");
    assert_eq!(m["token_endpoint"], "http://school.test/api/oauth/token");
}

/// `--school NAME=ISSUER` twice: two schools in one process, each on its issuer's address
/// with its own school id; `--openid` adds the OpenID Connect documents to each.
#[tokio::test]
async fn emulator_serves_several_schools_each_on_its_issuers_address() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let issuers: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut child = Command::new(BIN)
        .args([
            "emulator",
            "--school",
            &format!("north={}", issuers[0]),
            "--school",
            &format!("south={}/", issuers[1]),
            "--openid",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banners = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        banners.push(line);
    }
    let mut docs = Vec::new();
    for issuer in &issuers {
        let m: serde_json::Value =
            reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let keys: serde_json::Value = reqwest::get(m["jwks_uri"].as_str().unwrap())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        docs.push((m, keys));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(banners[0].contains("school north"), "{banners:?}");
    assert!(
        banners[1].contains(&format!("issuer {}, school south", issuers[1])),
        "{banners:?}"
    );
    for ((m, keys), issuer) in docs.iter().zip(&issuers) {
        assert_eq!(&m["issuer"], issuer.as_str());
        assert_eq!(keys["keys"][0]["kty"], "EC");
    }
    assert_ne!(
        docs[0].1["keys"][0]["x"], docs[1].1["keys"][0]["x"],
        "each school signs with its own key"
    );

    let out = Command::new(BIN)
        .args(["emulator", "--school", "north=http://school.example:80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses the value");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--school") && err.contains("IP address"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args([
            "emulator",
            "--school",
            "north=http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/loopgate.example.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", example])
        .env(
            "LOOPGATE_SESSION_SECRET",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
    // Positional form too.
    let out = Command::new(BIN)
        .args(["check", example])
        .env(
            "LOOPGATE_SESSION_SECRET",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn check_lists_every_problem_and_exits_64() {
    let dir = std::env::temp_dir().join(format!("loopgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"x\"\n[loopwise]\nissuer = \"https://lw.example\"\n[session]\nsecrets = [{ env = \"LOOPGATE_TEST_UNSET_VAR\" }]\nlifetim = \"1d\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nupstream = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "session.secrets[0]: environment variable `LOOPGATE_TEST_UNSET_VAR` is not set",
        "session.lifetim: unknown key",
    ] {
        assert!(err.contains(key), "{key} in:\n{err}");
    }
    let out = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/loopgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gen_secret_prints_a_valid_session_secret_and_check_shows_the_route_table() {
    let out = Command::new(BIN).arg("gen-secret").output().unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        loopgate::config::decode_session_secret(&secret)
            .unwrap()
            .len(),
        32
    );
    let again = Command::new(BIN).arg("gen-secret").output().unwrap();
    assert_ne!(
        String::from_utf8(again.stdout).unwrap().trim(),
        secret,
        "fresh each time"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/loopgate.example.toml");
    let out = Command::new(BIN)
        .args(["check", example])
        .env("LOOPGATE_SESSION_SECRET", &secret)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ROUTE") && text.contains("reports-api"),
        "{text}"
    );
    // Matched order: the longer /api/reports prefix is listed before the catch-all /.
    assert!(
        text.find("reports-api").unwrap() < text.find("\napp ").unwrap(),
        "{text}"
    );
}
