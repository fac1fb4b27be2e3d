//! The LDAP quick start as a newcomer runs it: `sync` of examples/ldap/ (a real slapd loaded with
//! examples/ldap/directory.ldif) into the embedded sandbox tenant, twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::path::Path;
use std::process::{Command, Output};

use m365_integration_tests::ldap::{ADMIN_PASSWORD, Slapd};

fn run(config: &Path, password: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sync", "--config"])
        .arg(config)
        .env_remove("M365_CONFIG")
        .env("M365_SECRET_LDAP_BIND_PASSWORD", password)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_ldap_quick_start_syncs_the_directory_and_the_second_run_changes_nothing() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ldap");
    let ldif = std::fs::read_to_string(examples.join("directory.ldif")).unwrap();
    let slapd = Slapd::start(&ldif);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m365-provisioner.toml");
    let example = std::fs::read_to_string(examples.join("m365-provisioner.toml")).unwrap();
    assert!(example.contains("ldap://127.0.0.1:3389"));
    std::fs::write(
        &config,
        example.replace("ldap://127.0.0.1:3389", &slapd.url),
    )
    .unwrap();

    // A wrong password: a connection failure naming the fix, before any tenant write.
    let refused = run(&config, "wrong");
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    let message = text(&refused);
    assert!(
        message.contains("invalid credentials") && !message.contains("wrong\""),
        "{message}"
    );

    let first = run(&config, ADMIN_PASSWORD);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let summary = String::from_utf8_lossy(&first.stdout);
    let last = summary.lines().last().unwrap();
    assert!(last.contains("151 created"), "{last}");
    assert!(last.contains("1 linked"), "{last}");
    assert!(last.contains("3 groups created"), "{last}");

    let second = run(&config, ADMIN_PASSWORD);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let summary = String::from_utf8_lossy(&second.stdout);
    assert!(summary.contains("no changes"), "{summary}");
    assert!(summary.contains("0 Graph writes"), "{summary}");
    assert!(
        summary.contains("note: no source changes since the last run"),
        "the second run reads only the directory's changes: {summary}"
    );

    // `--full` reads the whole directory even so, and still changes nothing.
    let full = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sync", "--full", "--config"])
        .arg(&config)
        .env_remove("M365_CONFIG")
        .env("M365_SECRET_LDAP_BIND_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(0), "{}", text(&full));
    let summary = String::from_utf8_lossy(&full.stdout);
    assert!(summary.contains("0 Graph writes"), "{summary}");
    assert!(!summary.contains("no source changes"), "{summary}");
}
