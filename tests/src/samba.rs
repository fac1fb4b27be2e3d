//! A throwaway Active Directory domain controller for the tests of the LDAP source in
//! `directory = "active-directory"` mode: Debian's Samba, provisioned and started by
//! `tests/ad/samba-ad-dc.sh` on a loopback address of its own.
//!
//! Provisioning a domain takes about ten seconds, so a test binary provisions and starts one
//! domain controller ([`SambaDc::shared`]) and its tests share it, each working in an
//! organizational unit of its own ([`SambaDc::new_ou`]). The script's watchdog stops Samba and
//! removes its directory once the test binary has exited (a static is never dropped).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot set up should fail the test loudly"
)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;

/// The domain: `AD.EXAMPLE.TEST`, naming context `DC=ad,DC=example,DC=test`.
pub const REALM: &str = "AD.EXAMPLE.TEST";
pub const BASE_DN: &str = "DC=ad,DC=example,DC=test";
/// Administrator's password, and the DN the source binds as.
pub const ADMIN_PASSWORD: &str = "Passw0rd!Adm1n";
pub const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=ad,DC=example,DC=test";

/// The loopback addresses tried, in order: port 389 is fixed, so one domain controller per
/// address, and 127.0.0.1 is left to whatever else runs on the machine.
const ADDRESSES: std::ops::RangeInclusive<u8> = 38..=47;

/// A running Samba domain controller.
#[derive(Debug)]
pub struct SambaDc {
    pub dir: PathBuf,
    /// `ldap://127.0.0.N`.
    pub url: String,
    pub pid: u32,
}

static SHARED: OnceLock<Result<SambaDc, String>> = OnceLock::new();

fn script() -> PathBuf {
    crate::cloud::repo_root().join("tests/ad/samba-ad-dc.sh")
}

/// Fails with a plain message naming the first program that is not installed.
fn check_installed() -> Result<(), String> {
    for program in ["samba", "samba-tool", "ldapsearch", "ldapmodify"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).exists());
        if !found {
            return Err(format!(
                "{program} is not installed: the Active Directory tests need Debian's samba and \
                 ldap-utils (bash tests/run installs them; or \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y samba ldap-utils)"
            ));
        }
    }
    Ok(())
}

/// Runs the script; its `KEY=VALUE` lines, or its output as the error.
fn run_script(args: &[&str]) -> Result<HashMap<String, String>, String> {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| format!("bash cannot run tests/ad/samba-ad-dc.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "samba-ad-dc.sh {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// Whether an interface carries `address` (Samba refuses one that none does).
fn on_loopback(address: &str) -> bool {
    Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&format!(" {address}/")))
}

/// Something already answers on `address`:389.
fn taken(address: &str) -> bool {
    let socket: SocketAddr = format!("{address}:389").parse().unwrap();
    TcpStream::connect_timeout(&socket, Duration::from_millis(300)).is_ok()
}

impl SambaDc {
    /// The test binary's domain controller, provisioned and started by the first test that
    /// asks; a failure to set it up fails every test with the same message.
    pub fn shared() -> &'static SambaDc {
        match SHARED.get_or_init(SambaDc::launch) {
            Ok(dc) => dc,
            Err(error) => panic!("{error}"),
        }
    }

    fn launch() -> Result<SambaDc, String> {
        check_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("samba-ad-")
            .tempdir()
            .map_err(|e| format!("no temp dir: {e}"))?
            .keep();
        let dir_text = dir.to_string_lossy().into_owned();
        run_script(&["provision", &dir_text, REALM, ADMIN_PASSWORD])?;
        let owner = std::process::id().to_string();
        let mut refused = Vec::new();
        for n in ADDRESSES {
            let address = format!("127.0.0.{n}");
            if taken(&address) {
                continue;
            }
            if !on_loopback(&address) {
                // Root may add it; the whole of 127/8 already reaches lo, this only names it.
                let _ = Command::new("ip")
                    .args(["addr", "add", &format!("{address}/8"), "dev", "lo"])
                    .output();
                if !on_loopback(&address) {
                    refused.push(format!(
                        "{address} is on no interface and could not be added (as root: \
                         ip addr add {address}/8 dev lo)"
                    ));
                    continue;
                }
            }
            match run_script(&["start", &dir_text, &address, &owner]) {
                Ok(values) => {
                    return Ok(SambaDc {
                        dir,
                        url: values["URL"].clone(),
                        pid: values["PID"].parse().unwrap(),
                    });
                }
                Err(error) => refused.push(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!(
            "samba did not start on any of 127.0.0.{}-{}: {}",
            ADDRESSES.start(),
            ADDRESSES.end(),
            refused.join("; ")
        ))
    }

    /// Applies LDIF as Administrator (simple bind): records without a `changetype` are added.
    pub fn apply(&self, ldif: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ldif).unwrap();
        let bind = format!("Administrator@{REALM}");
        let output = Command::new("ldapmodify")
            .args([
                "-a",
                "-x",
                "-H",
                &self.url,
                "-D",
                &bind,
                "-w",
                ADMIN_PASSWORD,
            ])
            .arg("-f")
            .arg(file.path())
            .output()
            .expect("ldapmodify runs");
        assert!(
            output.status.success(),
            "ldapmodify failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Creates `OU=name` under the domain and returns its DN. Each test names its own.
    pub fn new_ou(&self, name: &str) -> String {
        let dn = format!("OU={name},{BASE_DN}");
        self.apply(&format!(
            "dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n"
        ));
        dn
    }

    /// Runs `samba-tool` on the domain's database, as an administrator does on a domain
    /// controller (`user create`, `group addmembers`, `user disable`, ...): the running server
    /// serves the change at once. Panics with samba-tool's output when it fails.
    pub fn tool(&self, args: &[&str]) {
        let database = self.dir.join("private/sam.ldb");
        let output = Command::new("samba-tool")
            .args(args)
            .arg("-H")
            .arg(&database)
            .output()
            .expect("samba-tool runs");
        assert!(
            output.status.success(),
            "samba-tool {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The `objectGUID` of the entry at `dn` in its string form, read with ldapsearch.
    pub fn object_guid(&self, dn: &str) -> String {
        let output = Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url])
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-s", "base", "-b", dn])
            .args(["(objectClass=*)", "objectGUID"])
            .output()
            .expect("ldapsearch runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let encoded = text
            .lines()
            .find_map(|line| line.strip_prefix("objectGUID:: "))
            .unwrap_or_else(|| panic!("no objectGUID for {dn}: {text}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap();
        m365_source_ldap::entry::guid_string(&bytes).unwrap()
    }

    /// The `[source]` table of a configuration reading users and groups under `ou`, with
    /// `extra` lines.
    pub fn source_toml(&self, ou: &str, extra: &str) -> String {
        format!(
            "[source]\ntype = \"ldap\"\nurl = \"{}\"\ndirectory = \"active-directory\"\n\
             bind_dn = \"{ADMIN_DN}\"\nuser_base_dns = [\"{ou}\"]\ngroup_base_dns = [\"{ou}\"]\n\
             {extra}\n",
            self.url
        )
    }
}

/// The LDIF of a user `CN=cn` under `ou`: given name and surname from `cn`'s two words,
/// `mail`, enabled (userAccountControl 512, a normal account) or disabled (514: ACCOUNTDISABLE
/// too), and `extra` lines.
pub fn user_ldif(ou: &str, cn: &str, mail: &str, enabled: bool, extra: &str) -> String {
    let (given, family) = cn.split_once(' ').unwrap_or((cn, cn));
    let flags = if enabled { 512 } else { 514 };
    format!(
        "dn: CN={cn},{ou}\nobjectClass: user\ncn: {cn}\ngivenName: {given}\nsn: {family}\n\
         mail: {mail}\nuserAccountControl: {flags}\n{extra}\n"
    )
}
