//! Review before change: the plan table's markers, `plan --out` + `apply FILE` (refused when the
//! source moved), and the confirmation `sync` asks on a terminal before destructive steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{edit_source, examples_copy, run, stderr, stdout};

fn linked_users(config: &Path) -> u64 {
    let status = run(&["status", "--json"], config);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    status["linked"]["users"].as_u64().unwrap()
}

#[test]
fn the_plan_lists_objects_with_markers_after_a_summary_and_summary_prints_it_alone() {
    let (_dir, config) = examples_copy();
    let full = run(&["plan"], &config);
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let text = stdout(&full);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "plan contoso-demo/staff: 50 to create, 2 to change, 0 to remove (126 Graph writes at least)"
    );
    assert!(lines[1].starts_with("  steps: 3 add members, 2 create group, 48 create user"));
    // Each object once, its steps beneath it, the manager named by UPN.
    let avance = lines
        .iter()
        .position(|l| l.starts_with("+ user avance@example.com  (source "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[avance + 1].starts_with("    + create user "),
        "{text}"
    );
    assert!(lines[avance + 2].starts_with("    ~ licenses "), "{text}");
    let pmenon = lines
        .iter()
        .position(|l| l.starts_with("+ user pmenon@example.com  (source "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[pmenon + 2].starts_with("    ~ set manager ")
            && lines[pmenon + 2].ends_with("manager → bjensen@example.com"),
        "{text}"
    );
    assert!(text.contains("~ group Accounting  (source grp-accounting)\n    ~ match group "));
    assert!(
        text.contains("~ user bjensen@example.com  (source "),
        "{text}"
    );
    // Not a terminal: no colour.
    assert!(!text.contains('\u{1b}'), "{text}");

    let summary = run(&["plan", "--summary"], &config);
    assert_eq!(summary.status.code(), Some(0));
    assert_eq!(stdout(&summary).lines().count(), 2, "{}", stdout(&summary));
}

#[test]
fn apply_carries_out_the_saved_plan_and_refuses_it_once_the_source_moved() {
    let (dir, config) = examples_copy();
    let file = dir.path().join("reviewed.plan");
    let planned = run(&["plan", "--out", file.to_str().unwrap()], &config);
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    assert!(
        stdout(&planned).contains("saved to "),
        "{}",
        stdout(&planned)
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("\"op\": \"create_user\""), "{saved}");
    assert!(
        !saved.to_lowercase().contains("password\":"),
        "no secret: {saved}"
    );

    // The source moves: one user's department changes.
    edit_source(&config, |source| {
        source["users"][3]["attributes"]["department"] = Value::from("Field Support");
    });
    let refused = run(&["apply", file.to_str().unwrap()], &config);
    assert_eq!(
        refused.status.code(),
        Some(7),
        "{}{}",
        stdout(&refused),
        stderr(&refused)
    );
    let reason = stderr(&refused);
    assert!(
        reason.contains("the source or the tenant changed since"),
        "{reason}"
    );
    assert!(
        reason.contains(
            "no longer planned: + create user awilber@example.com  department=\"Support\""
        ),
        "{reason}"
    );
    assert!(
        reason.contains(
            "planned now: + create user awilber@example.com  department=\"Field Support\""
        ),
        "{reason}"
    );
    assert_eq!(linked_users(&config), 0, "nothing was written");

    // Back as it was reviewed: the plan is carried out.
    edit_source(&config, |source| {
        source["users"][3]["attributes"]["department"] = Value::from("Support");
    });
    let applied = run(&["apply", file.to_str().unwrap()], &config);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}{}",
        stdout(&applied),
        stderr(&applied)
    );
    assert!(
        stdout(&applied).contains("48 created"),
        "{}",
        stdout(&applied)
    );
    assert_eq!(linked_users(&config), 49);

    // Carried out once: a second apply is refused and says why.
    let again = run(&["apply", file.to_str().unwrap()], &config);
    assert_eq!(again.status.code(), Some(7));
    assert!(
        stderr(&again).contains("carried out already"),
        "{}",
        stderr(&again)
    );

    let broken = dir.path().join("broken.plan");
    std::fs::write(&broken, "plan contoso: 3 to create").unwrap();
    let unreadable = run(&["apply", broken.to_str().unwrap()], &config);
    assert_eq!(unreadable.status.code(), Some(2));
    assert!(
        stderr(&unreadable).contains("not a saved plan"),
        "{}",
        stderr(&unreadable)
    );
}

/// `sync` under a pseudo-terminal (util-linux `script`), with `answer` typed at the question.
fn sync_on_a_terminal(config: &Path, answer: &str) -> Output {
    let command = format!(
        "{} sync --config {}",
        env!("CARGO_BIN_EXE_m365-provisioner"),
        config.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("M365_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("`script` (util-linux) is needed for this test: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn sync_on_a_terminal_asks_before_destructive_steps() {
    let (_dir, config) = examples_copy();
    // Creates only: no question, even on a terminal.
    let first = sync_on_a_terminal(&config, "");
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    assert!(
        !stdout(&first).contains("Carry out this plan?"),
        "{}",
        stdout(&first)
    );

    // One user leaves the source: its disable is destructive.
    edit_source(&config, |source| {
        let users = source["users"].as_array_mut().unwrap();
        let gone = users.remove(10)["id"].clone();
        for group in source["groups"].as_array_mut().unwrap() {
            group["members"]
                .as_array_mut()
                .unwrap()
                .retain(|m| *m != gone);
        }
    });
    let declined = sync_on_a_terminal(&config, "no");
    let text = stdout(&declined);
    assert_eq!(declined.status.code(), Some(7), "{text}");
    assert!(text.contains("1 to remove"), "{text}");
    assert!(text.contains("- deprovision (disable)"), "{text}");
    assert!(
        text.contains("destructive step(s) above (marked -). Carry out this plan?"),
        "{text}"
    );
    assert!(text.contains("not confirmed"), "{text}");
    let pending = run(&["plan", "--json"], &config);
    let pending: Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert!(
        pending["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["op"] == "deprovision"),
        "the disable is still pending: {pending}"
    );

    let confirmed = sync_on_a_terminal(&config, "yes");
    assert_eq!(confirmed.status.code(), Some(0), "{}", stdout(&confirmed));
    let settled = run(&["plan", "--detailed-exitcode"], &config);
    assert_eq!(settled.status.code(), Some(0), "{}", stdout(&settled));

    // Without a terminal, sync never asks (schedulers, CI).
    edit_source(&config, |source| {
        let users = source["users"].as_array_mut().unwrap();
        let gone = users.remove(11)["id"].clone();
        for group in source["groups"].as_array_mut().unwrap() {
            group["members"]
                .as_array_mut()
                .unwrap()
                .retain(|m| *m != gone);
        }
    });
    let unattended = run(&["sync"], &config);
    assert_eq!(unattended.status.code(), Some(0), "{}", stderr(&unattended));
    assert!(!stdout(&unattended).contains("Carry out this plan?"));
}
