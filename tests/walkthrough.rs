//! The README's curl walk-through (`scripts/walkthrough.sh`) run step by step against a
//! real emulator, so the documentation cannot drift from the behaviour.

use std::process::Command;

use loopgate::emulator::{Emulator, EmulatorConfig};

#[tokio::test]
async fn readme_walkthrough_passes_against_the_emulator() {
    let em = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let url = em.url().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/walkthrough.sh");
    let out =
        tokio::task::spawn_blocking(move || Command::new("bash").arg(script).arg(url).output())
            .await
            .unwrap()
            .expect("bash runs (curl must be installed: scripts/ensure-deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("walkthrough: all steps OK"), "{stdout}");
    let stats = em.stats();
    assert_eq!(stats.event("client_registered"), 1);
    assert_eq!(stats.grant("authorization_code", "ok"), 1);
    assert_eq!(stats.grant("refresh_token", "ok"), 1);
    assert_eq!(stats.grant("refresh_token", "invalid_grant"), 1);
    assert_eq!(stats.event("family_revoked"), 1);
}
