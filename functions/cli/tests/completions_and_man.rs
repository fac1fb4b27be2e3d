//! `completions SHELL` and `man`: generated from the command definitions, for every command.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn completions_name_the_commands_and_their_options() {
    let bash = String::from_utf8(run(&["completions", "bash"]).stdout).unwrap();
    assert!(bash.contains("complete -F _m365__provisioner"), "{bash}");
    // Loaded into bash, it completes `m365-provisioner pl` to `plan`.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("m365-provisioner.bash");
    std::fs::write(&script, &bash).unwrap();
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}'; COMP_WORDS=(m365-provisioner pl); COMP_CWORD=1; \
             _m365__provisioner m365-provisioner pl m365-provisioner; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .expect("bash runs");
    let words = String::from_utf8_lossy(&completed.stdout);
    assert_eq!(
        words.split_whitespace().collect::<Vec<_>>(),
        ["plan"],
        "{words}"
    );
    for word in ["sync", "plan", "--detailed-exitcode", "--log-format"] {
        assert!(bash.contains(word), "bash: {word}");
    }
    let zsh = String::from_utf8(run(&["completions", "zsh"]).stdout).unwrap();
    assert!(zsh.starts_with("#compdef m365-provisioner"), "{zsh}");
    let fish = String::from_utf8(run(&["completions", "fish"]).stdout).unwrap();
    assert!(fish.contains("complete -c m365-provisioner"), "{fish}");

    let refused = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bash"));
}

#[test]
fn the_man_page_and_one_page_per_command() {
    let page = String::from_utf8(run(&["man"]).stdout).unwrap();
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH m365-provisioner 1"), "{page}");
    assert!(page.contains("Exit codes"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    run(&["man", "--dir", pages.to_str().unwrap()]);
    for name in [
        "m365-provisioner.1",
        "m365-provisioner-sync.1",
        "m365-provisioner-plan.1",
        "m365-provisioner-cloud-config-upload.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}");
    }
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first line is printed, as with `| head -0`.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{args:?}");
    }
}
