//! `m365-provisioner cloud config` against moto: the built binary uploads, lists, shows and
//! refuses. It finds moto through the SDK's default chain (`AWS_ENDPOINT_URL`, `AWS_REGION` and
//! the static test credentials in its environment) or `--endpoint-url`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken expectation should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use m365_aws::{ConfigStore, create_table};
use m365_integration_tests::moto::Moto;

const TABLE: &str = "m365-provisioner-state";

const VALID: &str = r#"[connection]
name = "contoso"

[source]
type = "file"
location = "s3://hr-exports/users.json"

[rule]
name = "staff"
[rule.mapping.attributes]
userPrincipalName = "{{ mail }}"
displayName = { attribute = "displayName" }
[rule.mapping.password]
source = "generate"
"#;

fn run(args: &[&str], moto: &Moto) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(args)
        .env_remove("M365_TABLE")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(moto.child_env())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn moto_with_table() -> (Moto, ConfigStore) {
    let moto = Moto::start().await;
    let client = moto.dynamodb_client().await;
    create_table(&client, TABLE).await.unwrap();
    (moto, ConfigStore::new(client, TABLE))
}

#[tokio::test]
async fn upload_list_and_show_a_valid_config() {
    let (moto, store) = moto_with_table().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "contoso.toml", VALID);
    let file = file.to_str().unwrap();

    let first = run(
        &[
            "cloud", "config", "upload", "--table", TABLE, "--file", file,
        ],
        &moto,
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stored = store.latest("contoso").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.text, VALID);
    assert_eq!(
        stdout(&first).trim(),
        format!("uploaded contoso version 1 (sha256 {})", stored.sha256)
    );

    // The same file again: nothing new. The table may also come from M365_TABLE, and the
    // endpoint from --endpoint-url.
    let again = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["cloud", "config", "upload", "--file", file])
        .args(["--endpoint-url", moto.endpoint()])
        .envs(moto.child_env())
        .env_remove("AWS_ENDPOINT_URL")
        .env("M365_TABLE", TABLE)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(stdout(&again).trim(), "unchanged: contoso is at version 1");

    let changed = VALID.replace("name = \"staff\"", "name = \"staff-v2\"");
    let file2 = write(dir.path(), "contoso-v2.toml", &changed);
    let second = run(
        &[
            "cloud",
            "config",
            "upload",
            "--table",
            TABLE,
            "--file",
            file2.to_str().unwrap(),
        ],
        &moto,
    );
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(
        stdout(&second).starts_with("uploaded contoso version 2 (sha256 "),
        "{}",
        text(&second)
    );

    let list = run(&["cloud", "config", "list", "--table", TABLE], &moto);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let lines: Vec<String> = stdout(&list).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("CONNECTION"), "{lines:?}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "contoso", "{lines:?}");
    assert_eq!(row[1], "2", "{lines:?}");

    let show = run(
        &[
            "cloud",
            "config",
            "show",
            "--table",
            TABLE,
            "--connection",
            "contoso",
        ],
        &moto,
    );
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert_eq!(stdout(&show), changed);

    let show_first = run(
        &[
            "cloud",
            "config",
            "show",
            "--table",
            TABLE,
            "--connection",
            "contoso",
            "--version",
            "1",
        ],
        &moto,
    );
    assert_eq!(show_first.status.code(), Some(0), "{}", text(&show_first));
    assert_eq!(stdout(&show_first), VALID);

    let history = run(
        &[
            "cloud",
            "config",
            "history",
            "--table",
            TABLE,
            "--connection",
            "contoso",
        ],
        &moto,
    );
    assert_eq!(history.status.code(), Some(0), "{}", text(&history));
    let versions: Vec<String> = stdout(&history)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(versions, ["2", "1"]);

    let missing = run(
        &[
            "cloud",
            "config",
            "show",
            "--table",
            TABLE,
            "--connection",
            "contoso",
            "--version",
            "7",
        ],
        &moto,
    );
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(
        text(&missing).contains("no config version 7"),
        "{}",
        text(&missing)
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_exit_code_2_and_nothing_is_written() {
    let (moto, store) = moto_with_table().await;
    let dir = tempfile::tempdir().unwrap();
    let local = write(
        dir.path(),
        "local.toml",
        &VALID.replace("s3://hr-exports/users.json", "users.json"),
    );
    let output = run(
        &[
            "cloud",
            "config",
            "upload",
            "--table",
            TABLE,
            "--file",
            local.to_str().unwrap(),
        ],
        &moto,
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains("[source] location \"users.json\" is a local path"),
        "{all}"
    );
    assert!(all.contains("s3://bucket/key"), "{all}");
    assert!(all.contains("nothing was uploaded"), "{all}");

    let sqlite = write(
        dir.path(),
        "sqlite.toml",
        &VALID.replace("[rule]\n", "[state]\ntype = \"sqlite\"\n\n[rule]\n"),
    );
    let output = run(
        &[
            "cloud",
            "config",
            "upload",
            "--table",
            TABLE,
            "--file",
            sqlite.to_str().unwrap(),
        ],
        &moto,
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("[state]"), "{}", text(&output));

    // A template that does not compile is refused as `validate` refuses it.
    let template = write(
        dir.path(),
        "template.toml",
        &VALID.replace("\"{{ mail }}\"", "\"{{ mail \""),
    );
    assert_ne!(std::fs::read_to_string(&template).unwrap(), VALID);
    let output = run(
        &[
            "cloud",
            "config",
            "upload",
            "--table",
            TABLE,
            "--file",
            template.to_str().unwrap(),
        ],
        &moto,
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("userPrincipalName"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("nothing was uploaded"),
        "{}",
        text(&output)
    );

    let missing = run(
        &[
            "cloud",
            "config",
            "upload",
            "--table",
            TABLE,
            "--file",
            dir.path().join("absent.toml").to_str().unwrap(),
        ],
        &moto,
    );
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));

    assert_eq!(store.list().await.unwrap(), []);
    assert_eq!(store.latest("contoso").await.unwrap(), None);

    let list = run(&["cloud", "config", "list", "--table", TABLE], &moto);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    assert!(
        stdout(&list).starts_with("no connection configs"),
        "{}",
        text(&list)
    );
}

#[test]
fn help_says_what_where_and_how() {
    let output = Command::new(env!("CARGO_BIN_EXE_m365-provisioner"))
        .args(["cloud", "config", "--help"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    for expected in [
        "DynamoDB table",
        "s3://bucket/key",
        "M365_SECRET_ID",
        "m365-provisioner cloud config upload --table",
    ] {
        assert!(help.contains(expected), "{expected}: {help}");
    }
}
