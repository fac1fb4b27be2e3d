//! A throwaway OpenLDAP server for the LDAP source tests (`tests/ldap/slapd.sh`: Debian's slapd
//! from a temp dir on 127.0.0.1, syncprov and memberof overlays), and the test directory it is
//! loaded with.
//!
//! The directory is the project's own: `dc=example,dc=com` with 152 people in `ou=People` (mail,
//! names, title, department, a manager by DN for everyone but the five department heads, some
//! written with spaces after the commas, two names with accents), and groups in `ou=Groups`
//! (`groupOfUniqueNames` and `groupOfNames`, one nested). It holds `bjensen@example.com`, whom
//! the demo tenant already has.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot set up should fail the test loudly"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The password of `cn=admin,dc=example,dc=com`.
pub const ADMIN_PASSWORD: &str = "secret";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const PEOPLE: &str = "ou=People,dc=example,dc=com";
pub const GROUPS: &str = "ou=Groups,dc=example,dc=com";

/// The five departments, each with its head first.
pub const DEPARTMENTS: [&str; 5] = [
    "Accounting",
    "Human Resources",
    "Product Development",
    "Product Testing",
    "Payroll",
];

const GIVEN: [&str; 16] = [
    "Andy", "Brenda", "Carlos", "Dana", "Eric", "Fiona", "Gern", "Helen", "Ian", "Jody", "Kurt",
    "Lee", "Mark", "Nora", "Owen", "Peter",
];
const FAMILY: [&str; 10] = [
    "Bergin",
    "Carter",
    "Daugherty",
    "Eddins",
    "Fuentes",
    "Gibson",
    "Hunter",
    "Jablonski",
    "Kelly",
    "Lutz",
];

/// One person of the directory.
#[derive(Debug, Clone)]
pub struct Person {
    pub uid: String,
    pub given: String,
    pub family: String,
    pub title: String,
    pub department: &'static str,
    /// The head of the department; `None` for the heads.
    pub manager: Option<String>,
}

impl Person {
    pub fn dn(&self) -> String {
        format!("uid={},{PEOPLE}", self.uid)
    }

    pub fn mail(&self) -> String {
        format!("{}@example.com", self.uid)
    }
}

/// The 152 people: bjensen heads Accounting; two names carry accents.
pub fn people() -> Vec<Person> {
    let mut people = Vec::new();
    let mut used = HashMap::new();
    for i in 0..152 {
        let department = DEPARTMENTS[i % DEPARTMENTS.len()];
        let (given, family) = match i {
            0 => ("Barbara".to_owned(), "Jensen".to_owned()),
            7 => ("Renée".to_owned(), "Müller".to_owned()),
            11 => ("José".to_owned(), "Álvarez".to_owned()),
            _ => (
                GIVEN[i % GIVEN.len()].to_owned(),
                FAMILY[(i / GIVEN.len()) % FAMILY.len()].to_owned(),
            ),
        };
        let base: String = format!(
            "{}{}",
            deunicode::deunicode(&given[..1]).to_ascii_lowercase(),
            deunicode::deunicode(&family).to_ascii_lowercase()
        );
        let n = used.entry(base.clone()).or_insert(0);
        *n += 1;
        let uid = if *n == 1 { base } else { format!("{base}{n}") };
        let head = i < DEPARTMENTS.len();
        people.push(Person {
            uid,
            given,
            family,
            title: if head {
                "Manager".into()
            } else {
                "Analyst".into()
            },
            department,
            manager: None,
        });
    }
    let heads: Vec<String> = people[..DEPARTMENTS.len()].iter().map(Person::dn).collect();
    for (i, person) in people.iter_mut().enumerate().skip(DEPARTMENTS.len()) {
        person.manager = Some(heads[i % DEPARTMENTS.len()].clone());
    }
    people
}

/// The groups: (cn, object class, member DNs).
pub fn groups(people: &[Person]) -> Vec<(String, &'static str, Vec<String>)> {
    let in_department = |name: &str| -> Vec<String> {
        people
            .iter()
            .filter(|p| p.department == name)
            .map(Person::dn)
            .collect()
    };
    let heads: Vec<String> = people[..DEPARTMENTS.len()].iter().map(Person::dn).collect();
    vec![
        (
            "Accounting".into(),
            "groupOfUniqueNames",
            in_department("Accounting"),
        ),
        (
            "Product Testing".into(),
            "groupOfNames",
            in_department("Product Testing"),
        ),
        ("Department Heads".into(), "groupOfUniqueNames", heads),
        (
            // Nested: its members are the heads' group and one person.
            "Leadership".into(),
            "groupOfNames",
            vec![format!("cn=Department Heads,{GROUPS}"), people[5].dn()],
        ),
    ]
}

/// The whole directory as LDIF. Some manager DNs are written with spaces after the commas, as
/// real directories hold them.
pub fn directory_ldif() -> String {
    let people = people();
    let mut ldif = String::from(
        "dn: dc=example,dc=com\nobjectClass: domain\nobjectClass: top\ndc: example\n\n\
         dn: ou=People,dc=example,dc=com\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: Groups\n\n",
    );
    for (i, p) in people.iter().enumerate() {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {} {}\ngivenName: {}\nsn: {}\n\
             mail: {}\ntitle: {}\ndepartmentNumber: {}\nl: Cupertino\n",
            p.dn(),
            p.uid,
            p.given,
            p.family,
            p.given,
            p.family,
            p.mail(),
            p.title,
            p.department
        ));
        if let Some(manager) = &p.manager {
            let written = if i % 3 == 0 {
                manager.replace(',', ", ")
            } else {
                manager.clone()
            };
            ldif.push_str(&format!("manager: {written}\n"));
        }
        ldif.push('\n');
    }
    for (name, class, members) in groups(&people) {
        let attribute = if class == "groupOfNames" {
            "member"
        } else {
            "uniqueMember"
        };
        ldif.push_str(&format!(
            "dn: cn={name},{GROUPS}\nobjectClass: {class}\ncn: {name}\n"
        ));
        for member in members {
            ldif.push_str(&format!("{attribute}: {member}\n"));
        }
        ldif.push('\n');
    }
    ldif
}

/// Heads of the generated directory: person i reports to person i % GENERATED_HEADS.
pub const GENERATED_HEADS: usize = 10;

/// The DN of person `i` of [`generated_ldif`].
pub fn generated_dn(i: usize) -> String {
    format!("uid=p{i:05},{PEOPLE}")
}

/// A generated directory of any size: `people` people `p00000`… with mail
/// (`p00000@example.com`), title, department and a manager DN (but the heads), and `groups`
/// groupOfNames `Team 0`… where person i is a member of team i % `groups`.
pub fn generated_ldif(people: usize, groups: usize) -> String {
    let mut ldif = String::from(
        "dn: dc=example,dc=com\nobjectClass: domain\nobjectClass: top\ndc: example\n\n\
         dn: ou=People,dc=example,dc=com\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: ou=Groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: Groups\n\n",
    );
    for i in 0..people {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid: p{i:05}\ncn: Person {i}\nsn: Person\n\
             givenName: P{i}\nmail: p{i:05}@example.com\ntitle: Analyst\ndepartmentNumber: D{}\n",
            generated_dn(i),
            i % GENERATED_HEADS
        ));
        if i >= GENERATED_HEADS {
            ldif.push_str(&format!("manager: {}\n", generated_dn(i % GENERATED_HEADS)));
        }
        ldif.push('\n');
    }
    for g in 0..groups {
        ldif.push_str(&format!(
            "dn: cn=Team {g},{GROUPS}\nobjectClass: groupOfNames\ncn: Team {g}\n"
        ));
        for i in (g..people).step_by(groups) {
            ldif.push_str(&format!("member: {}\n", generated_dn(i)));
        }
        ldif.push('\n');
    }
    ldif
}

/// A running slapd, stopped (and its directory removed) when dropped.
pub struct Slapd {
    pub dir: PathBuf,
    pub url: String,
    pub pid: u32,
}

fn script() -> PathBuf {
    crate::cloud::repo_root().join("tests/ldap/slapd.sh")
}

impl Slapd {
    /// Starts slapd loaded with `ldif`. Fails with a plain message when slapd is not installed.
    pub fn start(ldif: &str) -> Slapd {
        for program in ["slapd", "ldapadd", "ldapmodify"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|dir| std::path::Path::new(dir).join(program).exists());
            assert!(
                found,
                "{program} is not installed: the LDAP tests need Debian's slapd and ldap-utils \
                 (bash tests/run installs them; or apt-get install -y slapd ldap-utils)"
            );
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ldif).unwrap();
        let output = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(file.path())
            .output()
            .expect("bash runs tests/ldap/slapd.sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "slapd did not start: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        let values: HashMap<&str, &str> =
            stdout.lines().filter_map(|l| l.split_once('=')).collect();
        let failed: u32 = values["FAILED"].parse().unwrap();
        assert_eq!(failed, 0, "entries refused: {stdout}");
        Slapd {
            dir: PathBuf::from(values["DIR"]),
            url: values["URL"].to_owned(),
            pid: values["PID"].parse().unwrap(),
        }
    }

    /// Applies an LDIF change (`changetype: modify`, `delete`, `modrdn`) as the admin.
    pub fn modify(&self, change: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), change).unwrap();
        let output = Command::new("ldapmodify")
            .args([
                "-x",
                "-H",
                &self.url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(file.path())
            .output()
            .expect("ldapmodify runs");
        assert!(
            output.status.success(),
            "ldapmodify failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Turns the syncprov overlay off (`olcDisabled`, through cn=config over the ldapi socket
    /// as root): the server then answers a content synchronization request, which this
    /// project's source marks non-critical, with a plain search, as a server without it does.
    pub fn disable_content_sync(&self) {
        let socket = self.dir.join("ldapi").to_string_lossy().replace('/', "%2F");
        let mut child = Command::new("ldapmodify")
            .args(["-Q", "-Y", "EXTERNAL", "-H", &format!("ldapi://{socket}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ldapmodify runs");
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            b"dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config\nchangetype: modify\n\
              replace: olcDisabled\nolcDisabled: TRUE\n",
        )
        .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "syncprov was not disabled: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops slapd and starts it again on the same port and database: its syncprov session
    /// log, held in memory, is gone (a cookie from before then gets the present phase).
    pub fn restart(&mut self) {
        let output = Command::new("bash")
            .arg(script())
            .arg("restart")
            .arg(&self.dir)
            .output()
            .expect("bash runs tests/ldap/slapd.sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "slapd did not restart: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(pid) = stdout.lines().find_map(|l| l.strip_prefix("PID=")) {
            self.pid = pid.trim().parse().unwrap();
        }
    }

    /// An LDAP source on this server with `extra` settings lines, binding as the admin with
    /// `password`, reading the user attributes `mapped` names (`None`: all).
    pub fn source(
        &self,
        extra: &str,
        password: &str,
        mapped: Option<std::collections::BTreeSet<String>>,
    ) -> m365_source_ldap::LdapSource {
        let table: toml::Table = toml::from_str(&self.source_toml(extra)).unwrap();
        let mut section = table["source"].as_table().unwrap().clone();
        section.remove("type");
        let config: m365_core::config::ldap_source::LdapSourceConfig = section.try_into().unwrap();
        let secrets = m365_core::ConnectionSecrets {
            additional_apps: Vec::new(),
            tenant: m365_sandbox::demo::TENANT_ID.to_owned(),
            client_id: m365_sandbox::demo::CLIENT_ID.to_owned(),
            credential: m365_core::AppCredential::Secret(secrecy::SecretString::from(
                m365_sandbox::demo::CLIENT_SECRET,
            )),
            extra: [(
                "ldap_bind_password".to_owned(),
                secrecy::SecretString::from(password),
            )]
            .into_iter()
            .collect(),
        };
        m365_source_ldap::LdapSource::new(config, &secrets, mapped).unwrap()
    }

    /// The `[source]` table of a configuration on this server, with `extra` lines.
    pub fn source_toml(&self, extra: &str) -> String {
        format!(
            "[source]\ntype = \"ldap\"\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\n\
             user_base_dns = [\"{PEOPLE}\"]\nuser_filter = \"(&(objectClass=inetOrgPerson)(mail=*))\"\n\
             group_base_dns = [\"{GROUPS}\"]\n{extra}\n",
            self.url
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
