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
