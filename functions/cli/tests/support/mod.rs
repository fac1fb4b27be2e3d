//! What the CLI's test binaries share: a private copy of examples/ and a way to run the
//! `m365-provisioner` binary on it. Each test binary uses part of it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by several test binaries, each using part of it; test code fails loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A private copy of examples/ (its .state starts empty) and the path of its config.
pub fn examples_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for file in ["m365-provisioner.toml", "source.json"] {
        std::fs::copy(examples.join(file), dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("m365-provisioner.toml");
    (dir, config)
}

/// Runs the binary with `args --config CONFIG`, no terminal on stdin, colour allowed.
pub fn run(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("M365_CONFIG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Standard output then standard error.
pub fn text(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// Rewrites the copy's source.json through `edit`.
pub fn edit_source(config: &Path, edit: impl FnOnce(&mut Value)) {
    let path = config.with_file_name("source.json");
    let mut source: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut source);
    std::fs::write(&path, source.to_string()).unwrap();
}

pub mod cloud;
