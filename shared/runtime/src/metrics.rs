//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! Lambda ships everything a function writes to stdout to CloudWatch Logs, which extracts metrics
//! from any line that is a JSON object of this shape (no `PutMetricData` call, no extra latency):
//!
//! ```json
//! {"_aws": {"Timestamp": 1700000000000,
//!           "CloudWatchMetrics": [{"Namespace": "M365Provisioner",
//!                                  "Dimensions": [["Function", "Connection"]],
//!                                  "Metrics": [{"Name": "Created", "Unit": "Count"}]}]},
//!  "Function": "scheduled-sync", "Connection": "contoso", "Created": 3}
//! ```
//!
//! The line must be written on its own, not inside another log formatter's JSON: [`emit`] writes it
//! straight to stdout, bypassing `tracing`.
//!
//! With the JSON log format, Lambda filters application log lines by their `level` and gives a
//! line without one (or without a valid RFC 3339 `timestamp`) the level INFO, so with
//! `AWS_LAMBDA_LOG_LEVEL=WARN` a bare EMF line would be dropped before CloudWatch sees it
//! (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>).
//! [`emit`] therefore adds `"level"` — INFO, or the function's log level when that is stricter
//! ([`metric_level`]), so the line always passes the filter — and `"timestamp"`. Both are plain
//! properties to CloudWatch's metric extraction.

use m365_core::RunCounts;

use serde_json::{Map, Value, json};

/// The namespace of the provisioner's metrics.
pub const NAMESPACE: &str = "M365Provisioner";
/// Dimension naming the Lambda function (`scheduled-sync`, `webhook`).
pub const DIMENSION_FUNCTION: &str = "Function";
/// Dimension naming the connection.
pub const DIMENSION_CONNECTION: &str = "Connection";

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    /// The unit's name in CloudWatch.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF document on one line (no trailing newline).
///
/// Dimension values and metric values become top-level members; the directive lists the
/// dimension names as one dimension set. Metrics with a non-finite value (NaN, ±∞, which JSON
/// cannot carry) and metrics named like a dimension or `_aws` are left out rather than produce a
/// document CloudWatch would reject.
pub fn emf_line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
    timestamp_ms: i64,
) -> String {
    emf_line_with_rollups(namespace, dimensions, &[], metrics, timestamp_ms)
}

/// [`emf_line`] whose metrics are also published under further dimension sets (`rollups`, each
/// a subset of the dimension names, e.g. `[["Function"]]`): CloudWatch then aggregates them
/// across the dimensions left out, which is what an alarm over every connection reads (an alarm
/// must name all dimensions of the metric it watches). Names in a rollup that are not among
/// `dimensions` are dropped from it; an empty rollup is left out.
pub fn emf_line_with_rollups(
    namespace: &str,
    dimensions: &[(&str, &str)],
    rollups: &[&[&str]],
    metrics: &[(&str, f64, Unit)],
    timestamp_ms: i64,
) -> String {
    let mut root = Map::new();
    let mut dimension_names = Vec::with_capacity(dimensions.len());
    for (name, value) in dimensions {
        if *name == "_aws" || root.contains_key(*name) {
            continue;
        }
        root.insert((*name).to_owned(), Value::String((*value).to_owned()));
        dimension_names.push(*name);
    }
    let mut definitions = Vec::with_capacity(metrics.len());
    for (name, value, unit) in metrics {
        if *name == "_aws" || root.contains_key(*name) {
            continue;
        }
        let Some(number) = number(*value) else {
            continue;
        };
        root.insert((*name).to_owned(), Value::Number(number));
        definitions.push(json!({"Name": name, "Unit": unit.as_str()}));
    }
    let mut dimension_sets = vec![dimension_names.clone()];
    for rollup in rollups {
        let set: Vec<&str> = rollup
            .iter()
            .copied()
            .filter(|name| dimension_names.contains(name))
            .collect();
        if !set.is_empty() && !dimension_sets.contains(&set) {
            dimension_sets.push(set);
        }
    }
    let aws = json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": dimension_sets,
            "Metrics": definitions,
        }],
    });
    // `_aws` first: easier to read in the console.
    let mut document = Map::new();
    document.insert("_aws".to_owned(), aws);
    document.extend(root);
    Value::Object(document).to_string()
}

/// Whole values print as integers (`3`, not `3.0`); non-finite values have no JSON form.
fn number(value: f64) -> Option<serde_json::Number> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: integers up to here are exact in f64
    if value.is_finite() && value.fract() == 0.0 && value.abs() <= EXACT {
        Some(serde_json::Number::from(value as i64))
    } else {
        serde_json::Number::from_f64(value)
    }
}

/// Reads one count of a run.
pub type CountOf = fn(&RunCounts) -> u64;

/// The run counts each metric reports.
///
/// - Created: users created in the tenant; GroupsCreated: groups.
/// - Updated: user attribute updates.
/// - Disabled: accounts disabled following the source.
/// - Deprovisioned: users and groups deprovisioned because they left the source or scope (links
///   only forgotten, `unlinked`, are not counted).
/// - Failed: objects whose operation failed this run.
/// - PlanIssues: objects planning found a problem with (mapping, scope, a SKU part number the
///   tenant lacks); recorded as errors like failures.
/// - BreakerHeld: destructive steps the tripped circuit breaker held back (above 0: the breaker
///   tripped).
/// - Drift: out-of-band changes found in the tenant to what the connection manages.
/// - GraphRequests, Throttled: Graph requests sent, and those answered 429/503.
pub const RUN_METRICS: [(&str, CountOf); 11] = [
    ("Created", |c| c.created),
    ("GroupsCreated", |c| c.groups_created),
    ("Updated", |c| c.updated),
    ("Disabled", |c| c.disabled),
    ("Deprovisioned", |c| c.deprovisioned),
    ("Failed", |c| c.failed),
    ("PlanIssues", |c| c.plan_issues),
    ("BreakerHeld", |c| c.held),
    ("Drift", |c| c.drift),
    ("GraphRequests", |c| c.graph_requests),
    ("Throttled", |c| c.graph_throttled),
];

/// The metric of a run's duration, in milliseconds.
pub const RUN_DURATION: &str = "RunDuration";

/// The scheduled sync's continuation metrics ([`hop_metrics`]): `Hop`, the invocation's number
/// within its state machine execution (1 for the first), and `Busy`, 1 when the invocation found
/// another run holding the connection and did nothing.
pub const HOP_METRICS: [&str; 2] = ["Hop", "Busy"];

/// Every metric name this crate emits in [`NAMESPACE`] (the alarms of infra/template.yaml may
/// watch only these).
pub fn metric_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = RUN_METRICS.iter().map(|(name, _)| *name).collect();
    names.push(RUN_DURATION);
    names.extend(HOP_METRICS);
    names
}

/// The dimension sets every metric is published under beyond (Function, Connection): Function
/// alone, which alarms read across connections.
const ROLLUPS: &[&[&str]] = &[&[DIMENSION_FUNCTION]];

/// The EMF line of one scheduled-sync invocation's place in its execution: [`HOP_METRICS`] with
/// dimensions Function (`scheduled-sync`) and Connection, rolled up by Function.
pub fn hop_metrics(connection: &str, hop: u32, busy: bool, timestamp_ms: i64) -> String {
    emf_line_with_rollups(
        NAMESPACE,
        &[
            (DIMENSION_FUNCTION, "scheduled-sync"),
            (DIMENSION_CONNECTION, connection),
        ],
        ROLLUPS,
        &[
            (HOP_METRICS[0], f64::from(hop), Unit::Count),
            (HOP_METRICS[1], if busy { 1.0 } else { 0.0 }, Unit::Count),
        ],
        timestamp_ms,
    )
}

/// The EMF line of one run (or one continuation hop): the [`RUN_METRICS`] counts in `Count` and
/// `RunDuration` in milliseconds, in namespace [`NAMESPACE`] with dimensions Function and
/// Connection, and rolled up by Function alone. Every metric is present (0 when the run did not count it) so alarms and graphs see
/// a data point per run.
pub fn run_metrics(
    function: &str,
    connection: &str,
    counts: &RunCounts,
    duration_ms: u64,
    timestamp_ms: i64,
) -> String {
    let mut metrics: Vec<(&str, f64, Unit)> = RUN_METRICS
        .iter()
        .map(|(name, count)| (*name, count(counts) as f64, Unit::Count))
        .collect();
    metrics.push((RUN_DURATION, duration_ms as f64, Unit::Milliseconds));
    emf_line_with_rollups(
        NAMESPACE,
        &[
            (DIMENSION_FUNCTION, function),
            (DIMENSION_CONNECTION, connection),
        ],
        ROLLUPS,
        &metrics,
        timestamp_ms,
    )
}

/// The level an EMF line is logged at under the function's application log level
/// (`AWS_LAMBDA_LOG_LEVEL`: TRACE, DEBUG, INFO, WARN, ERROR, FATAL; unset or unknown: no
/// filter): INFO, or the configured level when it is stricter, so Lambda keeps the line.
pub fn metric_level(lambda_log_level: Option<&str>) -> &'static str {
    match lambda_log_level
        .map(|level| level.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("WARN" | "WARNING") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

/// `line` (an EMF document) with `"level"` and an RFC 3339 `"timestamp"` (its `_aws.Timestamp`)
/// added, as Lambda's log-level filter reads them. A line that is not a JSON object is returned
/// as it is.
pub fn with_log_level(line: &str, level: &str) -> String {
    let Ok(Value::Object(mut document)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let millis = document
        .get("_aws")
        .and_then(|aws| aws.get("Timestamp"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    document.insert("level".to_owned(), Value::String(level.to_owned()));
    document.insert("timestamp".to_owned(), Value::String(rfc3339(millis)));
    Value::Object(document).to_string()
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn rfc3339(millis: i64) -> String {
    m365_core::clock::format_utc_millis(millis)
}

/// Writes one EMF line to stdout, where Lambda picks it up, as a single write of the line and its
/// newline (so it does not interleave with log lines), with the level and timestamp Lambda's
/// log-level filter reads (module docs). Write errors are ignored: metrics must not fail a run.
pub fn emit(line: &str) {
    let level = metric_level(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref());
    let line = with_log_level(line.trim_end_matches(['\n', '\r']), level);
    // `println!` writes the line and its newline under one lock of stdout (and is captured by
    // the test harness, unlike a direct write).
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn emf_structure() {
        let line = emf_line(
            "Test/NS",
            &[("Function", "webhook"), ("Connection", "contoso")],
            &[
                ("Requests", 3.0, Unit::Count),
                ("Latency", 12.5, Unit::Milliseconds),
            ],
            1_700_000_000_123,
        );
        let doc = parse(&line);
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], json!(1_700_000_000_123i64));
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], "Test/NS");
        assert_eq!(
            directives[0]["Dimensions"],
            json!([["Function", "Connection"]])
        );
        assert_eq!(
            directives[0]["Metrics"],
            json!([
                {"Name": "Requests", "Unit": "Count"},
                {"Name": "Latency", "Unit": "Milliseconds"}
            ])
        );
        assert_eq!(doc["Function"], "webhook");
        assert_eq!(doc["Connection"], "contoso");
        assert_eq!(doc["Requests"], json!(3));
        assert!(line.contains("\"Requests\":3,"), "{line}");
        assert_eq!(doc["Latency"], json!(12.5));
        // Exactly _aws, the dimensions and the metrics.
        assert_eq!(doc.as_object().unwrap().len(), 5);
    }

    #[test]
    fn non_finite_and_colliding_metrics_left_out() {
        let line = emf_line(
            "NS",
            &[("Function", "f"), ("Function", "g"), ("_aws", "x")],
            &[
                ("Bad", f64::NAN, Unit::Count),
                ("Inf", f64::INFINITY, Unit::Count),
                ("Function", 1.0, Unit::Count),
                ("_aws", 1.0, Unit::Count),
                ("Good", 1.0, Unit::Count),
            ],
            0,
        );
        let doc = parse(&line);
        assert_eq!(doc["Function"], "f");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "Good", "Unit": "Count"}])
        );
        assert!(doc.get("Bad").is_none() && doc.get("Inf").is_none());
    }

    #[test]
    fn strings_are_escaped() {
        let line = emf_line("NS", &[("Connection", "a\"b\nc")], &[], 5);
        let doc = parse(&line);
        assert_eq!(doc["Connection"], "a\"b\nc");
    }

    #[test]
    fn run_metrics_maps_the_engine_counts() {
        let counts = RunCounts {
            created: 3,
            groups_created: 2,
            updated: 7,
            enabled: 1,
            disabled: 4,
            deprovisioned: 5,
            unlinked: 9,
            failed: 1,
            plan_issues: 8,
            held: 11,
            drift: 13,
            graph_requests: 120,
            graph_writes: 40,
            graph_throttled: 6,
            planned: 30,
            ..RunCounts::default()
        };
        let line = run_metrics(
            "scheduled-sync",
            "contoso",
            &counts,
            4_321,
            1_700_000_000_000,
        );
        let doc = parse(&line);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "M365Provisioner");
        assert_eq!(
            directive["Dimensions"],
            json!([["Function", "Connection"], ["Function"]])
        );
        let names: Vec<(&str, &str)> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("Created", "Count"),
                ("GroupsCreated", "Count"),
                ("Updated", "Count"),
                ("Disabled", "Count"),
                ("Deprovisioned", "Count"),
                ("Failed", "Count"),
                ("PlanIssues", "Count"),
                ("BreakerHeld", "Count"),
                ("Drift", "Count"),
                ("GraphRequests", "Count"),
                ("Throttled", "Count"),
                ("RunDuration", "Milliseconds"),
            ]
        );
        assert_eq!(doc["Function"], "scheduled-sync");
        assert_eq!(doc["Connection"], "contoso");
        assert_eq!(doc["Created"], json!(3));
        assert_eq!(doc["GroupsCreated"], json!(2));
        assert_eq!(doc["Updated"], json!(7));
        assert_eq!(doc["Disabled"], json!(4));
        assert_eq!(doc["Deprovisioned"], json!(5));
        assert_eq!(doc["Failed"], json!(1));
        assert_eq!(doc["PlanIssues"], json!(8));
        assert_eq!(doc["BreakerHeld"], json!(11));
        assert_eq!(doc["Drift"], json!(13));
        assert_eq!(doc["GraphRequests"], json!(120));
        assert_eq!(doc["Throttled"], json!(6));
        assert_eq!(doc["RunDuration"], json!(4321));
        assert_eq!(doc["_aws"]["Timestamp"], json!(1_700_000_000_000i64));
    }

    /// Lambda's log levels, least severe first.
    const LAMBDA_LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

    fn severity(level: &str) -> usize {
        LAMBDA_LEVELS.iter().position(|l| *l == level).unwrap()
    }

    #[test]
    fn metric_lines_carry_a_level_lambda_keeps_at_warn() {
        let line = run_metrics(
            "webhook",
            "contoso",
            &RunCounts::default(),
            12,
            1_700_000_000_123,
        );
        let logged = with_log_level(&line, metric_level(Some("WARN")));
        let doc = parse(&logged);
        assert_eq!(doc["level"], "WARN");
        assert_eq!(doc["timestamp"], "2023-11-14T22:13:20.123Z");
        // Still the same EMF document: directive and values untouched.
        let original = parse(&line);
        assert_eq!(doc["_aws"], original["_aws"]);
        assert_eq!(doc["RunDuration"], json!(12));
        assert_eq!(
            doc.as_object().unwrap().len(),
            original.as_object().unwrap().len() + 2
        );
        // Kept whatever the function's level: never below it, never below INFO.
        for configured in LAMBDA_LEVELS {
            let level = metric_level(Some(configured));
            assert!(
                severity(level) >= severity(configured),
                "{configured}: {level}"
            );
            assert!(severity(level) >= severity("INFO"), "{configured}: {level}");
        }
        assert_eq!(metric_level(None), "INFO");
        assert_eq!(metric_level(Some("debug")), "INFO");
        assert_eq!(metric_level(Some("fatal")), "FATAL");
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(with_log_level("not json", "WARN"), "not json");
    }

    #[test]
    fn hop_metrics_count_the_invocation_and_busy_answers() {
        let doc = parse(&hop_metrics("contoso", 7, false, 1_700_000_000_000));
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "M365Provisioner");
        assert_eq!(
            directive["Dimensions"],
            json!([["Function", "Connection"], ["Function"]])
        );
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Hop", "Unit": "Count"}, {"Name": "Busy", "Unit": "Count"}])
        );
        assert_eq!(doc["Function"], "scheduled-sync");
        assert_eq!(doc["Connection"], "contoso");
        assert_eq!(
            (doc["Hop"].clone(), doc["Busy"].clone()),
            (json!(7), json!(0))
        );
        let doc = parse(&hop_metrics("contoso", 1, true, 0));
        assert_eq!(
            (doc["Hop"].clone(), doc["Busy"].clone()),
            (json!(1), json!(1))
        );
    }

    #[test]
    fn rollups_keep_only_known_dimensions_once() {
        let line = emf_line_with_rollups(
            "NS",
            &[("Function", "f"), ("Connection", "c")],
            &[&["Function"], &["Unknown"], &["Function"], &[]],
            &[("M", 1.0, Unit::Count)],
            0,
        );
        assert_eq!(
            parse(&line)["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Connection"], ["Function"]])
        );
    }

    /// The `MetricName`s of the template's alarms in this namespace are metrics this crate
    /// emits, under the Function dimension it rolls up by, with Function values the handlers
    /// use.
    #[test]
    fn template_alarms_watch_emitted_metrics() {
        let template = include_str!("../../../infra/template.yaml");
        let emitted = metric_names();
        let mut watched = Vec::new();
        let lines: Vec<&str> = template.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.trim().strip_prefix("MetricName: ") else {
                continue;
            };
            // The namespace is named beside the metric name (before or after it).
            let around = &lines[i.saturating_sub(3)..(i + 4).min(lines.len())];
            let namespace = around
                .iter()
                .find_map(|l| l.trim().strip_prefix("Namespace: "))
                .unwrap_or_default();
            if namespace == "AWS/SQS" {
                assert_eq!(name, "ApproximateNumberOfMessagesVisible");
                continue;
            }
            assert_eq!(namespace, NAMESPACE, "metric {name}");
            assert!(
                emitted.contains(&name),
                "the template watches {name}, never emitted"
            );
            watched.push(name);
        }
        for alarmed in ["Failed", "PlanIssues", "BreakerHeld", "Hop"] {
            assert!(watched.contains(&alarmed), "no alarm watches {alarmed}");
        }
        for line in template.lines() {
            if let Some(value) = line.trim().strip_prefix("- Name: ") {
                assert!(
                    [DIMENSION_FUNCTION, "QueueName"].contains(&value),
                    "alarm dimension {value}: metrics are rolled up by Function only"
                );
            }
        }
        for function in ["Value: scheduled-sync", "Value: webhook"] {
            assert!(template.contains(function), "{function}");
        }
    }

    #[test]
    fn run_metrics_absent_counts_are_zero() {
        let line = run_metrics("webhook", "c", &RunCounts::default(), 0, 1);
        let doc = parse(&line);
        for (name, _) in RUN_METRICS {
            assert_eq!(doc[name], json!(0), "{name}");
        }
        assert_eq!(doc["RunDuration"], json!(0));
    }
}
