//! Redis clients for the sink and the dead-letter stream: `redis://`, or TLS with `rediss://`
//! verified against the system's CAs or a `ca_file`, a client certificate for mutual TLS, and an
//! explicit, loudly reported `tls_insecure`. ACL users come in the URL
//! (`rediss://user:password@host`); the password is redacted wherever the URL is shown.

use std::path::PathBuf;

use redis::{Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates};

use crate::retry::ErrorClass;

use crate::settings::{Diag, SecretUrl, Section};

/// TLS settings of one Redis connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM file of the CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for `tls-auth-clients yes`.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Skip verifying the server's certificate (warned about at start and in `check`).
    pub insecure: bool,
}

/// Whether `url` is a Redis URL tidemark can use; the error says what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = SecretUrl::new(url.to_string());
    if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|p| url.starts_with(p)) {
        return Err(format!("`{shown}` must start with redis:// (or rediss:// for TLS)"));
    }
    Client::open(url).map(|_| ()).map_err(|e| format!("invalid Redis URL {shown}: {e}"))
}

impl RedisTls {
    /// Read `{prefix}ca_file`, `{prefix}cert_file`, `{prefix}key_file` (and, when `insecure_key` is
    /// given, that flag) from `s`; they need a `rediss://` URL.
    pub fn read(
        s: &mut Section,
        d: &mut Diag,
        prefix: &str,
        insecure_key: Option<&str>,
        url: Option<&str>,
    ) -> RedisTls {
        let key = |k: &str| format!("{prefix}{k}");
        let ca_file = s.opt_str(d, &key("ca_file")).map(PathBuf::from);
        let cert = s.opt_str(d, &key("cert_file")).map(PathBuf::from);
        let keyf = s.opt_str(d, &key("key_file")).map(PathBuf::from);
        let insecure = insecure_key.and_then(|k| s.opt_bool(d, k)).unwrap_or(false);
        let client = match (cert, keyf) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                d.error(s.key(&key("key_file")), "is required with cert_file: a client certificate needs its key");
                None
            }
            (None, Some(_)) => {
                d.error(s.key(&key("cert_file")), "is required with key_file");
                None
            }
        };
        let tls = RedisTls { ca_file, client, insecure };
        let tls_url = url.is_some_and(|u| u.starts_with("rediss://"));
        if url.is_some() && !tls_url && tls != RedisTls::default() {
            let which = if tls.insecure { insecure_key.unwrap_or("tls_insecure").to_string() } else { key("ca_file") };
            d.error(s.key(&which), "applies to TLS connections only: use a rediss:// URL");
        }
        let files = [
            ("ca_file", tls.ca_file.as_ref()),
            ("cert_file", tls.client.as_ref().map(|c| &c.0)),
            ("key_file", tls.client.as_ref().map(|c| &c.1)),
        ];
        for (k, f) in files {
            if let Some(f) = f.filter(|f| !f.is_file()) {
                d.error(s.key(&key(k)), format!("{} does not exist or is not a file", f.display()));
            }
        }
        tls
    }

    /// The files, read into what the client takes; `None` for plain TLS with the system's CAs.
    fn certificates(&self) -> RedisResult<Option<TlsCertificates>> {
        if self.ca_file.is_none() && self.client.is_none() {
            return Ok(None);
        }
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read a TLS file",
                    format!("{}: {e}", p.display()),
                ))
            })
        };
        let root_cert = self.ca_file.as_ref().map(read).transpose()?;
        let client_tls = match &self.client {
            Some((c, k)) => Some(redis::ClientTlsConfig { client_cert: read(c)?, client_key: read(k)? }),
            None => None,
        };
        Ok(Some(TlsCertificates { client_tls, root_cert }))
    }

    /// A single-node client.
    pub fn client(&self, url: &str) -> RedisResult<Client> {
        let mut info = url.into_connection_info()?;
        if let ConnectionAddr::TcpTls { insecure, .. } = &mut info.addr {
            *insecure = self.insecure;
        }
        match self.certificates()? {
            Some(certs) if matches!(info.addr, ConnectionAddr::TcpTls { .. }) => Client::build_with_tls(info, certs),
            _ => Client::open(info),
        }
    }

    /// A cluster client builder seeded with `url`.
    pub fn cluster(&self, url: &str) -> RedisResult<redis::cluster::ClusterClientBuilder> {
        let mut b = redis::cluster::ClusterClient::builder(vec![url.to_string()]);
        if url.starts_with("rediss://") {
            b = b.tls(if self.insecure { redis::TlsMode::Insecure } else { redis::TlsMode::Secure });
            if let Some(certs) = self.certificates()? {
                b = b.certs(certs);
            }
        }
        Ok(b)
    }

    /// What `check` and the start say of an insecure setting.
    pub fn warning(&self) -> Option<&'static str> {
        self.insecure.then_some(
            "tls_insecure = true: the server's certificate is not verified, so anyone on the path can pose as Redis; give ca_file instead",
        )
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "cert_file": self.client.as_ref().map(|(c, _)| c.display().to_string()),
            "tls_insecure": self.insecure,
        })
    }
}

/// A TLS failure explained: which it was and what to set (the rest unchanged).
pub fn explain(error: &str) -> Option<&'static str> {
    if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
        Some("the server's certificate is not signed by a trusted CA; set ca_file to the CA that signed it")
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        Some("the server's certificate does not carry this host name; connect with a name it carries")
    } else if error.contains("Expired") {
        Some("the server's certificate has expired (or this machine's clock is wrong)")
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        Some("the server requires a client certificate (tls-auth-clients); set cert_file and key_file")
    } else if error.contains("InvalidContentType") || error.contains("corrupt message") {
        Some("the server does not speak TLS on this port; use redis:// or the server's tls-port")
    } else {
        None
    }
}

/// The one classification of Redis errors, for the sink and for dead-letter streams alike.
pub fn classify(e: &RedisError) -> ErrorClass {
    // A TLS handshake the server's certificate or ours fails: no retry helps.
    if explain(&format!("{e:?} {e}")).is_some() {
        return ErrorClass::Operator;
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorClass::Retry;
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => ErrorClass::Operator,
        ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown
        | ErrorKind::ReadOnly
        | ErrorKind::NoScriptError
        | ErrorKind::Moved
        | ErrorKind::Ask
        | ErrorKind::IoError
        | ErrorKind::ClusterConnectionNotFound => ErrorClass::Retry,
        _ => match e.code() {
            Some("OOM") => ErrorClass::Retry,
            _ => ErrorClass::Operator,
        },
    }
}
