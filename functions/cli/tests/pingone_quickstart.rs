//! The PingOne quick start as a newcomer runs it: `sandbox --pingone-port` serving the PingOne
//! stand-in, then `sync` of examples/pingone/ into the embedded sandbox tenant, twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The running `sandbox` command; killed by PID when the test ends, pass or fail.
struct Served {
    child: Child,
    pingone_url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sandbox", "--port", "0", "--pingone-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the m365-provisioner binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let pingone_url = loop {
        let line = lines
            .next()
            .expect("the banner names the PingOne stand-in")
            .unwrap();
        if let Some(url) = line.strip_prefix("pingone stand-in listening on ") {
            break url.trim().to_owned();
        }
    };
    assert!(
        pingone_url.starts_with("http://127.0.0.1:"),
        "{pingone_url}"
    );
    Served { child, pingone_url }
}

fn sync(config: &Path, secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["sync", "--config"])
        .arg(config)
        .env_remove("M365_CONFIG")
        .env("M365_SECRET_PINGONE_CLIENT_SECRET", secret)
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
fn the_pingone_quick_start_syncs_the_stand_in_environment_and_the_second_run_reads_only_activities()
{
    let served = serve();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pingone");
    let example = std::fs::read_to_string(examples.join("m365-provisioner.toml")).unwrap();
    assert!(example.contains("http://127.0.0.1:8760"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("m365-provisioner.toml");
    std::fs::write(
        &config,
        example.replace("http://127.0.0.1:8760", &served.pingone_url),
    )
    .unwrap();

    // A wrong client secret: the run fails naming the setting, before any tenant write.
    let refused = sync(&config, "not-the-secret");
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    let message = text(&refused);
    assert!(
        message.contains("client_secret_secret") && !message.contains("not-the-secret"),
        "{message}"
    );

    let first = sync(&config, m365_pingone_sandbox::demo::BASIC_CLIENT_SECRET);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let summary = String::from_utf8_lossy(&first.stdout);
    let last = summary.lines().last().unwrap();
    assert!(last.contains("4 created"), "Erin is disabled: {last}");
    assert!(last.contains("3 groups created"), "{last}");

    let second = sync(&config, m365_pingone_sandbox::demo::BASIC_CLIENT_SECRET);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let summary = String::from_utf8_lossy(&second.stdout);
    assert!(summary.contains("0 Graph writes"), "{summary}");
    assert!(
        summary.contains("note: no source changes since the last run"),
        "the second run reads only PingOne's activities: {summary}"
    );
}
