//! The failed objects of a run, logged one structured line each after the run.
//!
//! The source is the run itself: the executor's failures ([`ExecutionReport::failures`], each
//! with the message recorded in the state store: Graph's error text with its request-id) and the
//! plan's issues that no execution failure of the same object supersedes (a mapping problem, a
//! SKU part number the tenant lacks), the same set `status --errors` shows after the run. The
//! name (UPN or displayName) and the tenant object id come from the plan's steps of the object,
//! when it has any. Messages are operator text and never hold secrets (the `Directory` port's
//! contract); passwords never reach them.
//!
//! A mass failure must not flood the logs: the first [`LOGGED_FAILURES`] are logged, then one
//! line counts the rest.

use m365_core::ObjectKind;
use m365_core::executor::ExecutionReport;
use m365_core::plan::{Plan, Step};

/// How many failed objects one run logs, one line each.
pub const LOGGED_FAILURES: usize = 50;

/// Where an object failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStage {
    /// Planning found a problem with the object (mapping, scope, a value the tenant lacks).
    Plan,
    /// A tenant write failed.
    Execution,
}

impl FailureStage {
    /// The stage as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureStage::Plan => "plan",
            FailureStage::Execution => "execution",
        }
    }
}

/// One failed object of a run, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedObject {
    pub kind: ObjectKind,
    pub source_id: String,
    /// The UPN (users) or displayName (groups) the plan names it by, when a step names it.
    pub name: Option<String>,
    /// The tenant object id, when a step of the plan carries it.
    pub object_id: Option<String>,
    /// The operation that failed (`create`, `licenses`, `mapping`, …).
    pub operation: String,
    pub stage: FailureStage,
    /// The reason as recorded: Graph's error text with its request-id, or the plan's message.
    pub reason: String,
}

/// The failed objects of a run: its execution failures, then its plan issues about other
/// objects, each with the name and object id its plan steps give.
pub fn failed_objects(plan: &Plan, report: &ExecutionReport) -> Vec<FailedObject> {
    let mut out: Vec<FailedObject> = report
        .failures
        .iter()
        .map(|f| FailedObject {
            kind: f.kind,
            source_id: f.source_id.clone(),
            name: None,
            object_id: None,
            operation: f.operation.clone(),
            stage: FailureStage::Execution,
            reason: f.message.clone(),
        })
        .collect();
    for issue in &plan.issues {
        let superseded = report
            .failures
            .iter()
            .any(|f| f.kind == issue.kind && f.source_id == issue.source_id);
        if !superseded {
            out.push(FailedObject {
                kind: issue.kind,
                source_id: issue.source_id.clone(),
                name: None,
                object_id: None,
                operation: issue.operation.clone(),
                stage: FailureStage::Plan,
                reason: issue.message.clone(),
            });
        }
    }
    for failed in &mut out {
        for step in &plan.steps {
            if step.subject() != (failed.kind, failed.source_id.as_str()) {
                continue;
            }
            if failed.name.is_none() && !step.object().is_empty() {
                failed.name = Some(step.object().to_owned());
            }
            if failed.object_id.is_none() {
                failed.object_id = step_object_id(step).map(str::to_owned);
            }
        }
    }
    out
}

/// The tenant object id a step carries, if any (a create's is not known before it runs).
fn step_object_id(step: &Step) -> Option<&str> {
    match step {
        Step::MatchGroup { object_id, .. }
        | Step::LinkUser { object_id, .. }
        | Step::RestoreUser { object_id, .. }
        | Step::Deprovision { object_id, .. } => Some(object_id),
        _ => None,
    }
}

/// Logs the failed objects of a run (at most [`LOGGED_FAILURES`], then a count of the rest) as
/// warnings with structured fields: `connection`, `run_id`, `hop`, `kind`, `source_id`, `name`,
/// `object_id`, `operation`, `stage`, `reason`. Returns how many were logged one by one.
pub fn log_failed_objects(
    connection: &str,
    run_id: &str,
    hop: u32,
    failed: &[FailedObject],
) -> usize {
    let shown = failed.len().min(LOGGED_FAILURES);
    for object in &failed[..shown] {
        tracing::warn!(
            connection,
            run_id,
            hop,
            kind = object.kind.as_str(),
            source_id = %object.source_id,
            name = object.name.as_deref().unwrap_or(""),
            object_id = object.object_id.as_deref().unwrap_or(""),
            operation = %object.operation,
            stage = object.stage.as_str(),
            reason = %object.reason,
            "object failed in this run"
        );
    }
    let more = failed.len() - shown;
    if more > 0 {
        tracing::warn!(
            connection,
            run_id,
            hop,
            failed = failed.len(),
            logged = shown,
            not_logged = more,
            "more objects failed in this run than are logged one by one; `m365-provisioner status --errors` lists every object in error"
        );
    }
    shown
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use m365_core::ObjectError;
    use m365_core::plan::{BreakerVerdict, PlanIssue};
    use serde_json::Value;

    use super::*;

    fn error(kind: ObjectKind, source_id: &str, operation: &str, message: &str) -> ObjectError {
        ObjectError {
            kind,
            source_id: source_id.into(),
            operation: operation.into(),
            message: message.into(),
            attempts: 1,
            first_failed_at: 0,
            last_failed_at: 0,
            next_retry_at: 60_000,
        }
    }

    fn plan_of(steps: Vec<Step>, issues: Vec<PlanIssue>) -> Plan {
        Plan {
            drift: Vec::new(),
            connection: "contoso".into(),
            steps,
            issues,
            snapshot_complete: true,
            breaker: BreakerVerdict::default(),
        }
    }

    fn run_of_two_failures_and_an_issue() -> (Plan, ExecutionReport) {
        let steps = vec![
            Step::LinkUser {
                source_id: "u-ann".into(),
                user_principal_name: "ann@contoso.example".into(),
                object_id: "0b1c-ann".into(),
            },
            Step::AssignLicenses {
                source_id: "u-ann".into(),
                user_principal_name: "ann@contoso.example".into(),
                add: Vec::new(),
                remove: vec!["sku".into()],
            },
            Step::CreateGroup {
                source_id: "g-ops".into(),
                display_name: "Operations".into(),
                mail_nickname: "operations".into(),
                kind: Default::default(),
            },
        ];
        let issues = vec![
            PlanIssue {
                kind: ObjectKind::User,
                source_id: "u-cid".into(),
                operation: "licenses".into(),
                message: "user cid@contoso.example: SKU part number \"SPE_E3\" unknown".into(),
            },
            // Superseded by the execution failure of the same object.
            PlanIssue {
                kind: ObjectKind::User,
                source_id: "u-ann".into(),
                operation: "manager".into(),
                message: "manager not in scope".into(),
            },
        ];
        let report = ExecutionReport {
            failures: vec![
                error(
                    ObjectKind::User,
                    "u-ann",
                    "licenses",
                    "Graph 400 Request_BadRequest (request-id 7d1e-0001): no seats",
                ),
                error(
                    ObjectKind::Group,
                    "g-ops",
                    "create group",
                    "Graph 403 Authorization_RequestDenied (request-id 7d1e-0002)",
                ),
            ],
            ..ExecutionReport::default()
        };
        (plan_of(steps, issues), report)
    }

    #[test]
    fn failures_carry_name_object_id_operation_and_reason() {
        let (plan, report) = run_of_two_failures_and_an_issue();
        let failed = failed_objects(&plan, &report);
        assert_eq!(
            failed,
            vec![
                FailedObject {
                    kind: ObjectKind::User,
                    source_id: "u-ann".into(),
                    name: Some("ann@contoso.example".into()),
                    object_id: Some("0b1c-ann".into()),
                    operation: "licenses".into(),
                    stage: FailureStage::Execution,
                    reason: "Graph 400 Request_BadRequest (request-id 7d1e-0001): no seats".into(),
                },
                FailedObject {
                    kind: ObjectKind::Group,
                    source_id: "g-ops".into(),
                    name: Some("Operations".into()),
                    object_id: None,
                    operation: "create group".into(),
                    stage: FailureStage::Execution,
                    reason: "Graph 403 Authorization_RequestDenied (request-id 7d1e-0002)".into(),
                },
                FailedObject {
                    kind: ObjectKind::User,
                    source_id: "u-cid".into(),
                    name: None,
                    object_id: None,
                    operation: "licenses".into(),
                    stage: FailureStage::Plan,
                    reason: "user cid@contoso.example: SKU part number \"SPE_E3\" unknown".into(),
                },
            ]
        );
        assert!(
            failed_objects(
                &plan_of(Vec::new(), Vec::new()),
                &ExecutionReport::default()
            )
            .is_empty()
        );
    }

    /// A writer into a shared buffer, for a subscriber that logs JSON lines.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON log lines `f` writes through the functions' subscriber as Lambda sets it up
    /// (`AWS_LAMBDA_LOG_FORMAT=JSON`, level INFO).
    fn captured(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let settings = crate::logging::LogSettings::from_lookup(|name| match name {
            "AWS_LAMBDA_LOG_FORMAT" => Some("JSON".to_owned()),
            "AWS_LAMBDA_LOG_LEVEL" => Some("INFO".to_owned()),
            _ => None,
        });
        let subscriber = crate::logging::subscriber(&settings, move || writer.clone());
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn each_failed_object_is_one_warning_with_its_fields() {
        let (plan, report) = run_of_two_failures_and_an_issue();
        let failed = failed_objects(&plan, &report);
        let lines = captured(|| {
            assert_eq!(log_failed_objects("contoso", "run-1", 2, &failed), 3);
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let fields = &lines[0];
        assert_eq!(fields["level"], "WARN");
        assert_eq!(fields["message"], "object failed in this run");
        assert_eq!(fields["connection"], "contoso");
        assert_eq!(fields["run_id"], "run-1");
        assert_eq!(fields["hop"], 2);
        assert_eq!(fields["kind"], "user");
        assert_eq!(fields["source_id"], "u-ann");
        assert_eq!(fields["name"], "ann@contoso.example");
        assert_eq!(fields["object_id"], "0b1c-ann");
        assert_eq!(fields["operation"], "licenses");
        assert_eq!(fields["stage"], "execution");
        assert_eq!(
            fields["reason"],
            "Graph 400 Request_BadRequest (request-id 7d1e-0001): no seats"
        );
        assert_eq!(lines[1]["kind"], "group");
        assert_eq!(lines[2]["stage"], "plan");
        assert_eq!(lines[2]["object_id"], "");
    }

    #[test]
    fn a_mass_failure_logs_the_first_ones_and_counts_the_rest() {
        let failed: Vec<FailedObject> = (0..LOGGED_FAILURES + 7)
            .map(|i| FailedObject {
                kind: ObjectKind::User,
                source_id: format!("u-{i}"),
                name: None,
                object_id: None,
                operation: "create user".into(),
                stage: FailureStage::Execution,
                reason: "Graph 503 (request-id r)".into(),
            })
            .collect();
        let lines = captured(|| {
            assert_eq!(
                log_failed_objects("contoso", "run-2", 1, &failed),
                LOGGED_FAILURES
            );
        });
        assert_eq!(lines.len(), LOGGED_FAILURES + 1);
        assert_eq!(lines[LOGGED_FAILURES - 1]["source_id"], "u-49");
        let last = &lines[LOGGED_FAILURES];
        assert_eq!(last["failed"], 57);
        assert_eq!(last["logged"], 50);
        assert_eq!(last["not_logged"], 7);
        assert!(
            last["message"]
                .as_str()
                .unwrap()
                .contains("status --errors")
        );
    }
}
