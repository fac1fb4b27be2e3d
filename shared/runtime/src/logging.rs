//! Logs of the Lambda functions, following Lambda's advanced logging controls.
//!
//! - `AWS_LAMBDA_LOG_FORMAT=JSON` (the function's `LoggingConfig.LogFormat`): one JSON object per
//!   line with `timestamp`, `level`, `target`, the event's fields and `message` at the top level
//!   (and the current span, if any), no ANSI colours. Lambda filters JSON lines on `level`, and
//!   CloudWatch Logs Insights discovers the fields. Otherwise: plain text without timestamps
//!   (CloudWatch stamps every line) and without colours.
//! - Level: `AWS_LAMBDA_LOG_LEVEL` (`LoggingConfig.ApplicationLogLevel`: TRACE, DEBUG, INFO, WARN,
//!   ERROR, FATAL; FATAL maps to ERROR) takes precedence; else `RUST_LOG` (a level or
//!   `EnvFilter` directives); else INFO.
//! - The AWS SDK's and the HTTP stack's targets (`aws_smithy_*`, `aws_config`, `aws_sdk_*`,
//!   `aws_runtime`, `hyper*`, `h2`, `rustls`) are kept at WARN (or quieter, if the level is), since
//!   at INFO and below they log every request. `RUST_LOG` directives naming them override this.
//!
//! `lambda_runtime::tracing::init_default_subscriber` reads the same variables but does not fit:
//! it parses `RUST_LOG` as a single level (directives fall back to INFO), does not know FATAL,
//! drops targets and timestamps, and has no way to quiet the SDK.

use std::fmt;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Targets quieted by default (prefixes: `aws_smithy` covers `aws_smithy_runtime`, …).
pub const QUIET_TARGETS: [&str; 7] = [
    "aws_smithy",
    "aws_config",
    "aws_sdk",
    "aws_runtime",
    "hyper",
    "h2",
    "rustls",
];

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where the level came from (logged once at start, to explain a surprising verbosity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    AwsLambdaLogLevel,
    RustLog,
    Default,
}

/// The logging configuration read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `EnvFilter` directives, quiet targets first.
    pub filter: String,
    pub level_source: LevelSource,
}

impl LogSettings {
    /// Reads the settings through `lookup` (an environment variable's value by name), so tests
    /// need no process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let format = match non_empty("AWS_LAMBDA_LOG_FORMAT") {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };

        let lambda_level = non_empty("AWS_LAMBDA_LOG_LEVEL").and_then(|v| level_named(&v));
        let (filter, level_source) = if let Some(level) = lambda_level {
            (
                with_quiet_targets(level, &level_name(level)),
                LevelSource::AwsLambdaLogLevel,
            )
        } else if let Some(rust_log) = non_empty("RUST_LOG") {
            let rust_log = rust_log.trim().to_owned();
            match level_named(&rust_log) {
                Some(level) => (
                    with_quiet_targets(level, &level_name(level)),
                    LevelSource::RustLog,
                ),
                // Directives: the quiet targets first, so directives naming them win.
                None => (
                    with_quiet_targets(LevelFilter::WARN, &rust_log),
                    LevelSource::RustLog,
                ),
            }
        } else {
            (
                with_quiet_targets(LevelFilter::INFO, "info"),
                LevelSource::Default,
            )
        };
        Self {
            format,
            filter,
            level_source,
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        })
    }
}

/// A level name as Lambda or `RUST_LOG` write it (case-insensitive); FATAL is ERROR.
fn level_named(text: &str) -> Option<LevelFilter> {
    match text.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(LevelFilter::TRACE),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "INFO" => Some(LevelFilter::INFO),
        "WARN" | "WARNING" => Some(LevelFilter::WARN),
        "ERROR" | "FATAL" => Some(LevelFilter::ERROR),
        "OFF" => Some(LevelFilter::OFF),
        _ => None,
    }
}

fn level_name(level: LevelFilter) -> String {
    level.to_string().to_ascii_lowercase()
}

/// `quiet targets at min(WARN, level)` followed by `rest`.
fn with_quiet_targets(level: LevelFilter, rest: &str) -> String {
    // LevelFilter orders by verbosity: OFF < ERROR < WARN < … < TRACE.
    let quiet = level_name(level.min(LevelFilter::WARN));
    let mut directives: Vec<String> = QUIET_TARGETS
        .iter()
        .map(|target| format!("{target}={quiet}"))
        .collect();
    directives.push(rest.to_owned());
    directives.join(",")
}

/// The subscriber `settings` describe, writing to `writer` (stdout in Lambda).
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Invalid directives in RUST_LOG are skipped rather than fail the cold start.
    let filter = EnvFilter::builder().parse_lossy(&settings.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true);
    match settings.format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.without_time().finish()),
    }
}

/// Installs the global subscriber for a Lambda function, writing to stdout, and logs one line
/// naming the function and the settings. Calling it again (or after another subscriber was
/// installed) does nothing.
pub fn init(function: &'static str) {
    let settings = LogSettings::from_env();
    if tracing::subscriber::set_global_default(subscriber(&settings, std::io::stdout)).is_ok() {
        tracing::info!(
            function,
            log_format = %settings.format,
            log_filter = %settings.filter,
            level_source = ?settings.level_source,
            "logging initialised"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn settings(vars: &[(&str, &str)]) -> LogSettings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LogSettings::from_lookup(|name| vars.get(name).cloned())
    }

    fn quiet(level: &str) -> String {
        QUIET_TARGETS
            .iter()
            .map(|t| format!("{t}={level}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn defaults_to_text_at_info() {
        let s = settings(&[]);
        assert_eq!(s.format, LogFormat::Text);
        assert_eq!(s.filter, format!("{},info", quiet("warn")));
        assert_eq!(s.level_source, LevelSource::Default);
        // Empty values count as unset.
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", ""), ("RUST_LOG", " ")]),
            s
        );
    }

    #[test]
    fn format_from_lambda() {
        for v in ["JSON", "json", " Json "] {
            assert_eq!(
                settings(&[("AWS_LAMBDA_LOG_FORMAT", v)]).format,
                LogFormat::Json,
                "{v}"
            );
        }
        for v in ["Text", "TEXT", "", "yaml"] {
            assert_eq!(
                settings(&[("AWS_LAMBDA_LOG_FORMAT", v)]).format,
                LogFormat::Text,
                "{v}"
            );
        }
    }

    #[test]
    fn lambda_levels() {
        for (v, base, q) in [
            ("TRACE", "trace", "warn"),
            ("DEBUG", "debug", "warn"),
            ("INFO", "info", "warn"),
            ("WARN", "warn", "warn"),
            ("ERROR", "error", "error"),
            ("FATAL", "error", "error"),
            ("debug", "debug", "warn"),
        ] {
            let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", v), ("RUST_LOG", "trace")]);
            assert_eq!(s.filter, format!("{},{base}", quiet(q)), "{v}");
            assert_eq!(s.level_source, LevelSource::AwsLambdaLogLevel);
        }
    }

    #[test]
    fn unknown_lambda_level_falls_back() {
        let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", "LOUD"), ("RUST_LOG", "debug")]);
        assert_eq!(s.filter, format!("{},debug", quiet("warn")));
        assert_eq!(s.level_source, LevelSource::RustLog);
        let s = settings(&[("AWS_LAMBDA_LOG_LEVEL", "LOUD")]);
        assert_eq!(s.level_source, LevelSource::Default);
    }

    #[test]
    fn rust_log_level_or_directives() {
        let s = settings(&[("RUST_LOG", "error")]);
        assert_eq!(s.filter, format!("{},error", quiet("error")));
        let s = settings(&[("RUST_LOG", "info,m365_core=debug,aws_smithy_runtime=debug")]);
        assert_eq!(
            s.filter,
            format!(
                "{},info,m365_core=debug,aws_smithy_runtime=debug",
                quiet("warn")
            )
        );
        assert_eq!(s.level_source, LevelSource::RustLog);
    }

    /// Captures what a subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Capture {
        type Writer = Capture;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// Emits a fixed set of events under `settings` and returns the lines written.
    fn run(settings: &LogSettings) -> Vec<String> {
        let capture = Capture::default();
        let subscriber = subscriber(settings, capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "aws_smithy_runtime::client", "sdk-info");
            tracing::warn!(target: "aws_smithy_runtime::client", "sdk-warn");
            tracing::debug!(target: "aws_smithy_runtime::client", "sdk-debug");
            tracing::info!(target: "hyper_util::client", "hyper-info");
            tracing::info!(target: "m365_runtime::webhook", connection = "contoso", count = 3, "app-info");
            tracing::debug!(target: "m365_runtime::webhook", "app-debug");
            tracing::error!(target: "m365_runtime::webhook", "app-error");
        });
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn messages(lines: &[String]) -> Vec<&'static str> {
        [
            "sdk-info",
            "sdk-warn",
            "sdk-debug",
            "hyper-info",
            "app-info",
            "app-debug",
            "app-error",
        ]
        .into_iter()
        .filter(|m| lines.iter().any(|l| l.contains(m)))
        .collect()
    }

    #[test]
    fn filters_quiet_the_sdk() {
        for s in [
            settings(&[]),
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]),
            settings(&[("RUST_LOG", "info,aws_smithy_runtime=debug")]),
        ] {
            EnvFilter::builder().parse(&s.filter).unwrap();
        }
        assert_eq!(
            messages(&run(&settings(&[]))),
            ["sdk-warn", "app-info", "app-error"]
        );
        assert_eq!(
            messages(&run(&settings(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]))),
            ["sdk-warn", "app-info", "app-debug", "app-error"]
        );
        assert_eq!(
            messages(&run(&settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]))),
            ["app-error"]
        );
        assert_eq!(
            messages(&run(&settings(&[(
                "RUST_LOG",
                "info,aws_smithy_runtime=debug"
            )]))),
            ["sdk-info", "sdk-warn", "sdk-debug", "app-info", "app-error"]
        );
    }

    #[test]
    fn json_lines() {
        let lines = run(&settings(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]));
        assert_eq!(lines.len(), 3);
        let line: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "m365_runtime::webhook");
        assert_eq!(line["message"], "app-info");
        assert_eq!(line["connection"], "contoso");
        assert_eq!(line["count"], 3);
        assert!(line["timestamp"].as_str().unwrap().contains('T'));
        for l in &lines {
            assert!(!l.contains('\u{1b}'), "no ANSI: {l}");
        }
    }

    #[test]
    fn text_lines() {
        let lines = run(&settings(&[]));
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("INFO"), "{}", lines[1]);
        assert!(lines[1].contains("m365_runtime::webhook"), "{}", lines[1]);
        assert!(lines[1].contains("connection=\"contoso\""), "{}", lines[1]);
        for l in &lines {
            assert!(!l.contains('\u{1b}'), "no ANSI: {l}");
            assert!(serde_json::from_str::<serde_json::Value>(l).is_err());
        }
    }
}
