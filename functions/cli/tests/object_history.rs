//! Provision on demand and each object's history as an operator meets them: `sync --user`
//! prints every step taken for that user with the tenant's answer, `status --object` shows the
//! object's history, and `status --errors` lists every object in error with its next retry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use serde_json::Value;
use support::{edit_source, examples_copy, run, stderr, stdout};

/// A SKU the sandbox tenant holds with no licenses available (EMS E3).
const SKU_WITHOUT_SEATS: &str = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e";
/// The SKU the examples assign (with seats).
const SKU_WITH_SEATS: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
/// users[4] of examples/source.json.
const ADEYOUNG: &str = "6b0d549b-6f03-675a-1600-a35a099950d8";

#[test]
fn sync_user_traces_each_step_with_the_tenant_answer_and_status_object_shows_it_later() {
    let (_dir, config) = examples_copy();
    edit_source(&config, |source| {
        source["users"][4]["attributes"]["licenseSku"] = SKU_WITHOUT_SEATS.into();
    });

    let focused = run(&["sync", "--user", ADEYOUNG], &config);
    let trace = stdout(&focused);
    // 3: an object failed (the license), the others were applied.
    assert_eq!(
        focused.status.code(),
        Some(3),
        "{trace}{}",
        stderr(&focused)
    );
    let lines: Vec<&str> = trace.lines().collect();
    let head = lines
        .iter()
        .position(|l| *l == format!("user adeyoung@example.com  (source {ADEYOUNG})"))
        .unwrap_or_else(|| panic!("no trace heading for the user:\n{trace}"));
    let created = lines[head + 1];
    assert!(
        created.contains("applied  create user")
            && created.contains("→ created object ")
            && created.contains("; request-id "),
        "the tenant's answer with Graph's request-id: {trace}"
    );
    let failed = lines
        .iter()
        .find(|l| l.contains("failed   licenses"))
        .unwrap_or_else(|| panic!("no failed license step:\n{trace}"));
    assert!(
        failed.contains(&format!("+{SKU_WITHOUT_SEATS}"))
            && failed.contains("/assignLicense → 400 Request_BadRequest")
            && failed.contains("does not have any available licenses")
            && failed.contains("(request-id "),
        "{failed}"
    );
    assert!(
        !trace.contains("\nfailed: user"),
        "the trace shows the failure in place, not again below: {trace}"
    );
    // Only the named user: nobody else was created.
    let status: Value =
        serde_json::from_slice(&run(&["status", "--json"], &config).stdout).unwrap();
    assert_eq!(status["linked"]["users"], 1, "{status:#}");

    // Later, by UPN: the link, the error with its retry, and the same history.
    let shown = run(&["status", "--object", "adeyoung@example.com"], &config);
    let text = stdout(&shown);
    assert_eq!(shown.status.code(), Some(0), "{text}{}", stderr(&shown));
    assert!(
        text.starts_with(&format!("user adeyoung@example.com  (source {ADEYOUNG})\n")),
        "{text}"
    );
    assert!(text.contains("  linked to tenant object "), "{text}");
    assert!(text.contains("  in error [licenses] since "), "{text}");
    assert!(text.contains(", attempt 1, next retry "), "{text}");
    assert!(text.contains("  history, newest first:\n"), "{text}");
    let history: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("  history"))
        .skip(1)
        .collect();
    assert_eq!(history.len(), 2, "{text}");
    assert!(
        history[0].contains("failed   licenses"),
        "newest first: {text}"
    );
    assert!(history[1].contains("applied  create user"), "{text}");
    assert!(history.iter().all(|l| l.contains("  [run ")), "{text}");

    // The same object by its source id, as JSON.
    let json: Value =
        serde_json::from_slice(&run(&["status", "--object", ADEYOUNG, "--json"], &config).stdout)
            .unwrap();
    let object = &json["objects"][0];
    assert_eq!(object["source_id"], ADEYOUNG, "{json:#}");
    assert_eq!(object["history"].as_array().unwrap().len(), 2, "{json:#}");

    // The cause fixed, provisioning on demand retries at once, before the error's retry time.
    edit_source(&config, |source| {
        source["users"][4]["attributes"]["licenseSku"] = SKU_WITH_SEATS.into();
    });
    let retried = run(&["sync", "--user", "adeyoung@example.com"], &config);
    let trace = stdout(&retried);
    assert_eq!(
        retried.status.code(),
        Some(0),
        "{trace}{}",
        stderr(&retried)
    );
    assert!(
        trace.contains(&format!("applied  licenses  +{SKU_WITH_SEATS}")),
        "{trace}"
    );
    let errors: Value =
        serde_json::from_slice(&run(&["status", "--errors", "--json"], &config).stdout).unwrap();
    assert_eq!(errors["total"], 0, "{errors:#}");
}

#[test]
fn status_errors_lists_every_object_in_error_with_the_total_and_unknown_objects_exit_2() {
    let (_dir, config) = examples_copy();
    // Twelve users the tenant refuses a license (more than the overview's 10), one the mapping
    // refuses (a usageLocation that is not ISO 3166-1 alpha-2).
    edit_source(&config, |source| {
        for i in 0..12 {
            source["users"][i]["attributes"]["licenseSku"] = SKU_WITHOUT_SEATS.into();
        }
        source["users"][20]["attributes"]["usageLocation"] = "XX".into();
    });
    let sync = run(&["sync"], &config);
    assert_eq!(
        sync.status.code(),
        Some(3),
        "{}{}",
        stdout(&sync),
        stderr(&sync)
    );

    let overview = stdout(&run(&["status"], &config));
    assert!(
        overview.contains(
            "objects in error: 13 in all, soonest retry first (the first 10; `status --errors` lists every one)"
        ),
        "{overview}"
    );
    let every = run(&["status", "--errors"], &config);
    let text = stdout(&every);
    assert_eq!(every.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("objects in error: 13, soonest retry first\n"),
        "{text}"
    );
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 13, "{text}");
    assert!(rows.iter().all(|r| r.contains(", next retry ")), "{text}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("[licenses]")).count(),
        12,
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("usageLocation") && r.contains("XX")),
        "the mapping failure names the property and the value: {text}"
    );
    let json: Value =
        serde_json::from_slice(&run(&["status", "--errors", "--json"], &config).stdout).unwrap();
    assert_eq!(json["total"], 13, "{json:#}");
    assert_eq!(json["errors"].as_array().unwrap().len(), 13, "{json:#}");

    let unknown = run(&["status", "--object", "nobody@example.com"], &config);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("knows no object \"nobody@example.com\""),
        "{}",
        stderr(&unknown)
    );
}
