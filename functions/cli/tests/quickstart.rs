//! The quick start as a newcomer runs it: `sync` of examples/ into the embedded sandbox tenant,
//! twice; `plan --json`; `status`; and the documented exit codes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{examples_copy, run, stderr, stdout};

#[test]
fn quick_start_syncs_the_examples_and_the_second_run_changes_nothing() {
    let (_dir, config) = examples_copy();
    let first = run(&["sync"], &config);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let text = stdout(&first);
    // The plan table, then one summary line.
    assert!(text.contains("create user"), "{text}");
    assert!(text.contains("link user"), "{text}");
    let summary = text.lines().last().unwrap();
    assert!(summary.contains("48 created"), "{summary}");
    assert!(summary.contains("1 linked"), "{summary}");
    assert!(summary.contains("1 groups matched"), "{summary}");
    assert!(summary.contains("2 groups created"), "{summary}");

    let second = run(&["sync"], &config);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let summary = stdout(&second);
    assert!(summary.contains("no changes"), "{summary}");
    assert!(summary.contains("0 Graph writes"), "{summary}");

    let status = run(&["status", "--json"], &config);
    assert_eq!(status.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 49);
    assert_eq!(status["linked"]["groups"], 3);
    assert_eq!(status["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        status["runs"][0]["counts"].get("graph_writes"),
        Some(&Value::from(0))
    );
}

#[test]
fn plan_json_lists_the_creates_the_link_of_the_existing_upn_and_the_match_of_accounting() {
    let (_dir, config) = examples_copy();
    let output = run(&["plan", "--json"], &config);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let ops = |op: &str| steps.iter().filter(|s| s["op"] == op).count();
    assert_eq!(ops("create_user"), 48);
    assert_eq!(ops("create_group"), 2);
    let link: Vec<&Value> = steps.iter().filter(|s| s["op"] == "link_user").collect();
    assert_eq!(link.len(), 1);
    assert_eq!(link[0]["user_principal_name"], "bjensen@example.com");
    let matched: Vec<&Value> = steps.iter().filter(|s| s["op"] == "match_group").collect();
    assert_eq!(matched.len(), 1);
    assert_eq!(matched[0]["display_name"], "Accounting");
    // The disabled source user is not created.
    assert!(
        !steps
            .iter()
            .any(|s| s["op"] == "create_user" && s["user_principal_name"] == "jweber@example.com")
    );
    // plan changes nothing: a sync afterwards still has everything to do.
    let again = run(&["plan", "--json"], &config);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["steps"].as_array().unwrap().len(), steps.len());
}

#[test]
fn configuration_errors_exit_2_and_name_the_key() {
    let (_dir, config) = examples_copy();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("allow_update = true", "allow_updates = true");
    std::fs::write(&config, text).unwrap();
    let output = run(&["sync"], &config);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("allow_updates"),
        "{}",
        stderr(&output)
    );

    let missing = run(&["plan"], Path::new("/nonexistent/m365-provisioner.toml"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/m365-provisioner.toml"));
}

#[test]
fn per_object_failures_exit_3_and_the_breaker_exits_4() {
    let (dir, config) = examples_copy();
    let source_path = dir.path().join("source.json");
    let mut source: Value =
        serde_json::from_str(&std::fs::read_to_string(&source_path).unwrap()).unwrap();
    // One user with a usageLocation Graph refuses: a per-user error, the rest syncs.
    source["users"][7]["attributes"]["usageLocation"] = Value::from("XX");
    std::fs::write(&source_path, source.to_string()).unwrap();
    let first = run(&["sync"], &config);
    assert_eq!(
        first.status.code(),
        Some(3),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let status = run(&["status", "--json"], &config);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 48);
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("usageLocation")
    );

    // The bad value is fixed, and 30 users leave the source (with their group memberships):
    // more than the breaker allows (10 or 20 %).
    source["users"][7]["attributes"]["usageLocation"] = Value::from("US");
    let users = source["users"].as_array_mut().unwrap();
    users.truncate(19);
    let kept: Vec<Value> = users.iter().map(|u| u["id"].clone()).collect();
    for group in source["groups"].as_array_mut().unwrap() {
        group["members"]
            .as_array_mut()
            .unwrap()
            .retain(|m| kept.contains(m));
    }
    std::fs::write(&source_path, source.to_string()).unwrap();
    let tripped = run(&["sync"], &config);
    assert_eq!(
        tripped.status.code(),
        Some(4),
        "{}{}",
        stdout(&tripped),
        stderr(&tripped)
    );
    assert!(
        stdout(&tripped).contains("circuit breaker"),
        "{}",
        stdout(&tripped)
    );
    let status = run(&["status", "--json"], &config);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    // The fixed user was created (non-destructive steps run); nobody was deprovisioned.
    assert_eq!(status["linked"]["users"], 49, "nothing was deprovisioned");

    let overridden = run(&["sync", "--override-breaker"], &config);
    assert_eq!(overridden.status.code(), Some(0), "{}", stdout(&overridden));
    let status = run(&["status", "--json"], &config);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 19);
}

#[test]
fn rule_delete_with_deprovision_forgets_the_rule() {
    let (_dir, config) = examples_copy();
    assert_eq!(run(&["sync"], &config).status.code(), Some(0));
    let deleted = run(&["rule", "delete", "--deprovision"], &config);
    assert_eq!(
        deleted.status.code(),
        Some(0),
        "{}{}",
        stdout(&deleted),
        stderr(&deleted)
    );
    assert!(
        stdout(&deleted).contains("52 object(s) deprovisioned"),
        "{}",
        stdout(&deleted)
    );
    let status = run(&["status", "--json"], &config);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["linked"]["users"], 0);
    assert_eq!(status["linked"]["groups"], 0);
}

#[test]
fn plan_detailed_exitcode_is_2_with_changes_0_without_and_1_on_error() {
    let (_dir, config) = examples_copy();
    let pending = run(&["plan", "--detailed-exitcode"], &config);
    assert_eq!(pending.status.code(), Some(2), "{}", stderr(&pending));
    assert!(
        stdout(&pending).contains("create user"),
        "{}",
        stdout(&pending)
    );
    // Without the flag, the same plan is a success.
    assert_eq!(run(&["plan"], &config).status.code(), Some(0));

    let synced = run(&["sync"], &config);
    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    let settled = run(&["plan", "--detailed-exitcode"], &config);
    assert_eq!(settled.status.code(), Some(0), "{}", stderr(&settled));
    assert!(
        stdout(&settled).contains("no changes"),
        "{}",
        stdout(&settled)
    );

    // A configuration error is 1 under the flag (2 without it).
    let missing = Path::new("/nonexistent/m365-provisioner.toml");
    let broken = run(&["plan", "--detailed-exitcode"], missing);
    assert_eq!(broken.status.code(), Some(1));
    assert!(stderr(&broken).contains("/nonexistent/m365-provisioner.toml"));
    assert_eq!(run(&["plan"], missing).status.code(), Some(2));
}

/// `plan` with extra arguments and environment, against a private copy of examples/.
fn plan_logging(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"));
    command
        .arg("plan")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("M365_CONFIG")
        .env_remove("M365_LOG")
        .env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output
}

#[test]
fn verbosity_rust_log_and_json_log_lines() {
    let (_dir, config) = examples_copy();
    let read = "file source read";
    // Warnings and errors only by default, and with -q.
    assert!(!stderr(&plan_logging(&config, &[], &[])).contains(read));
    assert!(!stderr(&plan_logging(&config, &["-q"], &[])).contains(read));
    // -v shows info lines, as RUST_LOG=info does; --log wins over RUST_LOG.
    let verbose = stderr(&plan_logging(&config, &["-v"], &[]));
    assert!(verbose.contains(read), "{verbose}");
    assert!(verbose.contains("INFO"), "{verbose}");
    assert!(
        !verbose.contains('\u{1b}'),
        "no colour when stderr is not a terminal"
    );
    let rust_log = stderr(&plan_logging(&config, &[], &[("RUST_LOG", "info")]));
    assert!(rust_log.contains(read), "{rust_log}");
    let explicit = stderr(&plan_logging(
        &config,
        &["--log", "warn"],
        &[("RUST_LOG", "info")],
    ));
    assert!(!explicit.contains(read), "{explicit}");
    // --log-format json: one JSON object per line, the message among its fields.
    let json = stderr(&plan_logging(&config, &["-v", "--log-format", "json"], &[]));
    let lines: Vec<Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let found = lines
        .iter()
        .find(|line| line["fields"]["message"] == read)
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(found["level"], "INFO");
    assert_eq!(found["fields"]["users"], 50);
}

#[test]
fn validate_accepts_sku_part_numbers_and_refuses_junk_by_value() {
    let (dir, config) = examples_copy();
    let sample = dir.path().join("sample.json");
    let write = |sku: &str| {
        std::fs::write(
            &sample,
            format!(
                r#"{{"users": [{{"id": "u9", "enabled": true, "attributes": {{"uid": "pp", "mail": "pp@example.com", "displayName": "P P", "givenName": "P", "sn": "P", "usageLocation": "US", "licenseSku": {sku}}}}}]}}"#
            ),
        )
        .unwrap();
    };
    write(r#"["SPE_E3", "enterprisepack"]"#);
    let valid = run(&["validate", "--sample", sample.to_str().unwrap()], &config);
    assert_eq!(valid.status.code(), Some(0), "{}", stderr(&valid));
    let report = stdout(&valid);
    assert!(
        report.contains("licenses = [\"SPE_E3\", \"enterprisepack\"]"),
        "{report}"
    );
    assert!(report.contains("part numbers are resolved"), "{report}");

    write(r#""E3 for everyone""#);
    let junk = run(&["validate", "--sample", sample.to_str().unwrap()], &config);
    assert_eq!(junk.status.code(), Some(2), "{}", stdout(&junk));
    let problem = stderr(&junk);
    assert!(
        problem.contains("licenses = \"E3 for everyone\": is neither a skuId GUID"),
        "{problem}"
    );
    assert!(problem.contains("nor a SKU part number"), "{problem}");
}

#[test]
fn validate_maps_the_first_source_user_and_names_each_problem() {
    let (dir, config) = examples_copy();
    let valid = run(&["validate"], &config);
    assert_eq!(valid.status.code(), Some(0), "{}", stderr(&valid));
    let report = stdout(&valid);
    assert!(report.starts_with("valid: "), "{report}");
    assert!(
        report.contains("userPrincipalName = \"bjensen@example.com\""),
        "{report}"
    );
    assert!(
        report.contains("licenses = [\"6fd2c87f-b296-42f0-b197-1e91e994b900\"]"),
        "{report}"
    );
    // validate reads nothing but the files: no state, no tenant.
    assert!(!dir.path().join(".state").exists());

    // A sample user without the attribute the UPN template needs.
    let sample = dir.path().join("sample.json");
    std::fs::write(
        &sample,
        r#"{"users": [{"id": "u9", "enabled": true, "attributes": {"displayName": "No Mail", "usageLocation": "US", "licenseSku": "6fd2c87f-b296-42f0-b197-1e91e994b900"}}]}"#,
    )
    .unwrap();
    let unmapped = run(&["validate", "--sample", sample.to_str().unwrap()], &config);
    assert_eq!(unmapped.status.code(), Some(2), "{}", stdout(&unmapped));
    let problem = stderr(&unmapped);
    assert!(problem.contains("user u9"), "{problem}");
    assert!(problem.contains("userPrincipalName"), "{problem}");

    // A template that does not compile names its property; nothing else runs.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"{{ mail | lower }}\"", "\"{{ mail | lower \"");
    std::fs::write(&config, text).unwrap();
    let broken = run(&["validate"], &config);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        stderr(&broken).contains("userPrincipalName"),
        "{}",
        stderr(&broken)
    );
    assert!(stdout(&broken).is_empty(), "{}", stdout(&broken));
}
