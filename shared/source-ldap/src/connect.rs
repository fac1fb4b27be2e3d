//! One LDAP session: connect (`ldap://`, StartTLS or `ldaps://`, with the configured CA bundle),
//! simple bind, and paged searches (RFC 2696,
//! <https://www.rfc-editor.org/rfc/rfc2696>).

use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use m365_core::SourceError;
use m365_core::config::ldap_source::LdapSourceConfig;
use secrecy::{ExposeSecret, SecretString};

/// What a session needs beyond the configuration: the bind password (from the secret store).
pub struct Credentials {
    pub bind_dn: Option<String>,
    pub password: Option<SecretString>,
}

/// LDAP result code 49: invalidCredentials (RFC 4511 section 4.1.9).
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code 32: noSuchObject.
pub const NO_SUCH_OBJECT: u32 = 32;
/// Active Directory's LDAP_SERVER_SHOW_DELETED_OID.
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";
/// slapd's answer to a sync cookie newer than its own state.
const UNWILLING_TO_PERFORM: u32 = 53;

/// A bound session.
pub struct Session {
    ldap: Ldap,
    url: String,
    operation_timeout: Duration,
    page_size: i32,
}

/// The TLS settings: the CA bundle's roots when one is configured, else the platform's.
fn tls_settings(config: &LdapSourceConfig) -> Result<LdapConnSettings, SourceError> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(config.connect_timeout_seconds))
        .set_starttls(config.starttls);
    if let Some(ca_file) = &config.ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let unreadable = |detail: String| {
            SourceError::Unavailable(format!(
                "ldap source: ca_file {ca_file:?} {detail}; point it at a PEM file of CA certificates"
            ))
        };
        let mut roots = rustls::RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| unreadable(format!("cannot be read: {e}")))?;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|e| unreadable(format!("is not valid PEM: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| unreadable(format!("holds a certificate rustls refuses: {e}")))?;
        }
        if roots.is_empty() {
            return Err(unreadable("holds no certificate".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unreadable(format!("cannot be used: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        settings = settings.set_config(Arc::new(tls));
    }
    Ok(settings)
}

impl Session {
    /// Connects and binds. Errors name the URL and the bind DN, never the password.
    pub async fn open(
        config: &LdapSourceConfig,
        credentials: &Credentials,
    ) -> Result<Session, SourceError> {
        let url = config.url.trim().to_owned();
        let settings = tls_settings(config)?;
        let (connection, mut ldap) =
            LdapConnAsync::with_settings(settings, &url)
                .await
                .map_err(|e| {
                    SourceError::Unavailable(format!("ldap source: cannot connect to {url}: {e}"))
                })?;
        ldap3::drive!(connection);
        let operation_timeout = Duration::from_secs(config.operation_timeout_seconds);
        let (dn, password) = match (&credentials.bind_dn, &credentials.password) {
            (Some(dn), Some(password)) => (dn.as_str(), password.expose_secret()),
            (Some(dn), None) => {
                return Err(SourceError::Unavailable(format!(
                    "ldap source: bind_dn {dn:?} has no password: store it as the connection \
                     secret {:?} (secrets file [extra], M365_SECRET_{} in the environment, or \
                     extra in the Secrets Manager secret)",
                    config.bind_password_secret,
                    config.bind_password_secret.to_ascii_uppercase()
                )));
            }
            (None, _) => ("", ""),
        };
        let bound = ldap
            .with_timeout(operation_timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| unavailable(&url, "bind", &e))?;
        if bound.rc == INVALID_CREDENTIALS {
            return Err(SourceError::Unavailable(format!(
                "ldap source: {url} refuses the bind of {dn:?} (invalid credentials); check \
                 bind_dn and the secret {:?}",
                config.bind_password_secret
            )));
        }
        bound.success().map_err(|e| unavailable(&url, "bind", &e))?;
        Ok(Session {
            ldap,
            url,
            operation_timeout,
            page_size: i32::try_from(config.page_size).unwrap_or(500),
        })
    }

    /// Every entry under `base` (subtree) that `filter` matches, page by page.
    pub async fn search(
        &mut self,
        base: &str,
        filter: &str,
        attributes: &[String],
    ) -> Result<Vec<SearchEntry>, SearchError> {
        self.search_with(base, filter, attributes, Vec::new()).await
    }

    /// Like [`Session::search`], with Active Directory's Show Deleted control: deleted objects
    /// (tombstones, `isDeleted` TRUE) are found too
    /// (<https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-adts/57056773-932c-4e55-9491-e13f49ba580c>).
    pub async fn search_showing_deleted(
        &mut self,
        base: &str,
        filter: &str,
        attributes: &[String],
    ) -> Result<Vec<SearchEntry>, SearchError> {
        let show_deleted = ldap3::controls::RawControl {
            ctype: SHOW_DELETED_OID.to_owned(),
            crit: true,
            val: None,
        };
        self.search_with(base, filter, attributes, vec![show_deleted])
            .await
    }

    async fn search_with(
        &mut self,
        base: &str,
        filter: &str,
        attributes: &[String],
        controls: Vec<ldap3::controls::RawControl>,
    ) -> Result<Vec<SearchEntry>, SearchError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(self.page_size)),
        ];
        let mut stream = self
            .ldap
            .with_timeout(self.operation_timeout)
            .with_controls(controls)
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes.to_vec())
            .await
            .map_err(|e| SearchError::Failed(unavailable(&self.url, "search", &e)))?;
        let mut entries = Vec::new();
        while let Some(entry) = stream
            .next()
            .await
            .map_err(|e| SearchError::Failed(unavailable(&self.url, "search", &e)))?
        {
            entries.push(SearchEntry::construct(entry));
        }
        let done = stream.finish().await;
        if done.rc == NO_SUCH_OBJECT {
            return Err(SearchError::NoSuchBase(base.to_owned()));
        }
        done.success()
            .map_err(|e| SearchError::Failed(unavailable(&self.url, "search", &e)))?;
        Ok(entries)
    }

    /// The entry at `dn` (a base search), `None` when there is none.
    pub async fn read(
        &mut self,
        dn: &str,
        attributes: &[String],
    ) -> Result<Option<SearchEntry>, SourceError> {
        let result = self
            .ldap
            .with_timeout(self.operation_timeout)
            .search(dn, Scope::Base, "(objectClass=*)", attributes.to_vec())
            .await
            .map_err(|e| unavailable(&self.url, "read", &e))?;
        if result.1.rc == NO_SUCH_OBJECT {
            return Ok(None);
        }
        let (entries, _) = result
            .success()
            .map_err(|e| unavailable(&self.url, "read", &e))?;
        Ok(entries.into_iter().next().map(SearchEntry::construct))
    }

    /// One refreshOnly content synchronization search (`crate::sync`) from `cookie` (`None`:
    /// everything, and the cookie to start from). Never combined with paged results, which
    /// RFC 4533 section 3.1 leaves undefined with it. A cookie the server no longer accepts is
    /// [`SyncError::Expired`].
    pub async fn sync_search(
        &mut self,
        base: &str,
        filter: &str,
        attributes: &[String],
        cookie: Option<&[u8]>,
    ) -> Result<crate::sync::SyncAnswer, SyncError> {
        let control = ldap3::controls::RawControl {
            ctype: crate::sync::SYNC_REQUEST_OID.to_owned(),
            crit: false,
            val: Some(crate::sync::request_value(cookie)),
        };
        let failed = |e: &LdapError| SyncError::Failed(unavailable(&self.url, "sync search", e));
        let mut stream = self
            .ldap
            .with_timeout(self.operation_timeout)
            .with_controls(vec![control])
            .streaming_search(base, Scope::Subtree, filter, attributes.to_vec())
            .await
            .map_err(|e| failed(&e))?;
        let mut answer = crate::sync::SyncAnswer::default();
        let mut odd = None;
        while let Some(message) = stream.next().await.map_err(|e| failed(&e))? {
            if let Err(error) = answer.take_in(message) {
                odd.get_or_insert(error);
            }
        }
        let done = stream.finish().await;
        match done.rc {
            NO_SUCH_OBJECT => return Err(SyncError::NoSuchBase(base.to_owned())),
            crate::sync::SYNC_REFRESH_REQUIRED | UNWILLING_TO_PERFORM if cookie.is_some() => {
                return Err(SyncError::Expired(format!(
                    "{} refuses the sync cookie of {base:?} (result {}: {})",
                    self.url, done.rc, done.text
                )));
            }
            _ => {}
        }
        if let Err(error) = answer.finish(&done.ctrls) {
            odd.get_or_insert(error);
        }
        done.success().map_err(|e| failed(&e))?;
        match odd {
            Some(error) => Err(SyncError::Expired(format!(
                "{} answered the sync search of {base:?} with something this source cannot read ({error})",
                self.url
            ))),
            None => Ok(answer),
        }
    }

    /// Ends the session politely; a failure to do so changes nothing read.
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// Why a search failed.
pub enum SearchError {
    /// The base DN does not exist.
    NoSuchBase(String),
    Failed(SourceError),
}

/// Why a sync search failed.
pub enum SyncError {
    /// The base DN does not exist.
    NoSuchBase(String),
    /// The server no longer continues from the given cookie, or answered in a way this source
    /// cannot read: the engine reads the whole directory instead.
    Expired(String),
    Failed(SourceError),
}

fn unavailable(url: &str, operation: &str, error: &LdapError) -> SourceError {
    SourceError::Unavailable(format!("ldap source: {operation} at {url} failed: {error}"))
}
