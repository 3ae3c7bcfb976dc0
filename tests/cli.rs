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
