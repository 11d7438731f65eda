//! TLS to PostgreSQL with libpq's URL parameters and meaning: `sslmode` (disable, allow, prefer,
//! require, verify-ca, verify-full; libpq's default `prefer`), `sslrootcert` (a PEM file, or
//! `system`), `sslcert` + `sslkey` (a client certificate). The same settings serve the SQL
//! connections (tokio-postgres, through [`MakeTls`]) and the replication stream
//! (pgwire-replication's [`TlsConfig`]).
//!
//! tokio-postgres knows only disable/prefer/require and none of the file parameters, so they are
//! taken out of the URL here and the rest is left to its parser.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pgwire_replication::config::{SslMode as WireMode, TlsConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// libpq tries plaintext first; here it is served as `prefer` (TLS first, plaintext if the
    /// server offers none), which is never weaker.
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// `sslrootcert=system`, or no `sslrootcert`: the system's trust store.
    System,
    File(PathBuf),
}

/// The TLS settings of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgTls {
    pub mode: SslMode,
    /// `None`: no `sslrootcert` given (the system's store for verification).
    pub root: Option<Roots>,
    /// `sslcert` and `sslkey`.
    pub client: Option<(PathBuf, PathBuf)>,
}

const PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Split the TLS parameters off a URL (`postgres://…?sslmode=…` or `host=… sslmode=…`): the
/// settings, and the URL without them for tokio-postgres.
pub fn split_url(url: &str) -> Result<(PgTls, String), String> {
    let mut found: Vec<(String, String)> = Vec::new();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if PARAMS.contains(&k) {
                        found.push((k.to_string(), percent_decode(v)?));
                    } else {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if PARAMS.contains(&k) => found.push((k.to_string(), v.trim_matches('\'').to_string())),
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let mut tls = PgTls::default();
    let (mut cert, mut key) = (None, None);
    for (k, v) in found {
        match k.as_str() {
            "sslmode" => {
                tls.mode = SslMode::parse(&v).ok_or_else(|| {
                    format!("sslmode `{v}` is not one of disable, allow, prefer, require, verify-ca, verify-full")
                })?
            }
            "sslrootcert" => tls.root = Some(if v == "system" { Roots::System } else { Roots::File(v.into()) }),
            "sslcert" => cert = Some(PathBuf::from(v)),
            _ => key = Some(PathBuf::from(v)),
        }
    }
    tls.client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("sslcert and sslkey go together: a client certificate needs its key".into()),
    };
    // libpq: with a root certificate file, `require` verifies the chain as `verify-ca` does.
    if tls.mode == SslMode::Require && matches!(tls.root, Some(Roots::File(_))) {
        tls.mode = SslMode::VerifyCa;
    }
    Ok((tls, rest))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("bad percent escape in `{s}`"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8"))
}

/// The system's CA bundle: `SSL_CERT_FILE`, or the first of the usual places that exists.
fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return Some(f.into());
    }
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl PgTls {
    /// The CA file verification uses (`None`: Mozilla's roots, compiled in).
    fn roots_file(&self) -> Option<PathBuf> {
        match &self.root {
            Some(Roots::File(f)) => Some(f.clone()),
            _ => system_bundle(),
        }
    }

    /// What the trusted CAs are, for messages.
    pub fn roots_text(&self) -> String {
        match (&self.root, self.roots_file()) {
            (Some(Roots::File(f)), _) => format!("sslrootcert {}", f.display()),
            (_, Some(f)) => format!("the system's CAs ({})", f.display()),
            _ => "Mozilla's CAs".into(),
        }
    }

    /// The replication stream's settings.
    pub fn wire(&self, host: &str) -> TlsConfig {
        let mode = match self.mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Allow | SslMode::Prefer => WireMode::Prefer,
            SslMode::Require => WireMode::Require,
            SslMode::VerifyCa => WireMode::VerifyCa,
            SslMode::VerifyFull => WireMode::VerifyFull,
        };
        let mut tls = TlsConfig {
            mode,
            ca_pem_path: if self.mode.verifies_chain() { self.roots_file() } else { None },
            // The host as the name to verify, also an IP address (checked against the
            // certificate's IP names, as libpq does).
            sni_hostname: Some(host.to_string()),
            ..TlsConfig::default()
        };
        if let Some((c, k)) = &self.client {
            tls = tls.with_client_cert(c, k);
        }
        tls
    }

    /// The SQL connections' connector, with the certificates read now (a missing file is an
    /// error naming it).
    pub fn make(&self) -> Result<MakeTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        if self.mode.verifies_chain() {
            match self.roots_file() {
                Some(f) => {
                    let certs = read_certs(&f, "sslrootcert")?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(format!("sslrootcert {}: no CA certificate in it", f.display()));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
        }
        let roots = Arc::new(roots);
        let builder = match self.mode {
            SslMode::VerifyFull => builder.with_root_certificates(roots),
            mode => {
                let chain = (mode == SslMode::VerifyCa)
                    .then(|| WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build())
                    .transpose()
                    .map_err(|e| e.to_string())?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(Lenient { chain, provider }))
            }
        };
        let config = match &self.client {
            Some((cert, key)) => {
                let chain = read_certs(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file_named(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("sslcert/sslkey: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(MakeTls(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }

    /// tokio-postgres's own mode: `require` and above never fall back to plaintext.
    pub fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as M;
        match self.mode {
            SslMode::Disable => M::Disable,
            SslMode::Allow | SslMode::Prefer => M::Prefer,
            _ => M::Require,
        }
    }

    /// A TLS failure (from either client) explained: which it was, and what to set.
    pub fn explain(&self, host: &str, error: &str) -> Option<String> {
        let fix = if error.contains("UnknownIssuer") || error.contains("unknown issuer") {
            format!(
                "the server's certificate is not signed by a CA tidemark trusts ({}); set sslrootcert to the file of the CA that signed it",
                self.roots_text()
            )
        } else if error.contains("NotValidForName") || error.contains("not valid for name") {
            format!(
                "the server's certificate does not carry the host name `{host}` (sslmode={}); connect with a name the certificate carries, or set sslmode=verify-ca to check the chain only",
                self.mode.as_str()
            )
        } else if error.contains("Expired") || error.contains("expired") {
            "the server's certificate has expired (or this machine's clock is wrong); renew it".into()
        } else if error.contains("NotValidYet") {
            "the server's certificate is not valid yet (or this machine's clock is wrong)".into()
        } else if error.contains("does not support TLS") || error.contains("SSLRequest rejected") {
            format!(
                "the server does not offer TLS but sslmode={} requires it; turn on ssl on the server, or set sslmode=prefer to allow plaintext",
                self.mode.as_str()
            )
        } else if error.contains("no encryption") && error.contains("pg_hba.conf") {
            "the server admits this user only over TLS; set sslmode=verify-full (with sslrootcert) or sslmode=require in source.url".into()
        } else if error.contains("requires a valid client certificate") {
            "the server admits this user only with a client certificate; set sslcert and sslkey in source.url".into()
        } else if error.contains("certificate") && (error.contains("TLS") || error.contains("tls")) {
            format!("a TLS failure: check sslmode ({}), sslrootcert, sslcert and sslkey", self.mode.as_str())
        } else {
            return None;
        };
        Some(format!("{error}: {fix}"))
    }
}

fn read_certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

trait KeyFile: Sized {
    fn from_pem_file_named(path: &std::path::Path) -> Result<Self, String>;
}

impl KeyFile for PrivateKeyDer<'static> {
    fn from_pem_file_named(path: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_file(path).map_err(|e| format!("sslkey {}: {e}", path.display()))
    }
}

/// `verify-ca` (with `chain`: it must lead to a trusted CA, the name is not checked), and `prefer`
/// / `require` (without: encrypted, the certificate not checked, libpq's meaning). Either way the
/// handshake's signatures are checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS hook, over rustls.
#[derive(Clone)]
pub struct MakeTls(tokio_rustls::TlsConnector);

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        // A Unix socket has no name (""); the server declines TLS there, so the error waits
        // until a handshake is really attempted.
        let name = ServerName::try_from(domain.to_string()).map_err(|e| format!("host `{domain}`: {e}"));
        Ok(Connect { connector: self.0.clone(), name })
    }
}

pub struct Connect {
    connector: tokio_rustls::TlsConnector,
    name: Result<ServerName<'static>, String>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Ok(TlsStream(self.connector.connect(name, stream).await?))
        })
    }
}

pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (libpq's channel_binding=prefer settles for the same
        // when the client offers none); the connection itself is still verified per sslmode.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_keep_libpqs_meaning() {
        let (tls, rest) = split_url(
            "postgres://u:p@db.example.com:5432/shop?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db.example.com:5432/shop?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root, Some(Roots::File("/etc/ca.pem".into())));
        let (tls, rest) = split_url("host=db user=u sslmode=require sslcert=/c.pem sslkey=/k.pem").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(tls.client, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(tls.mode, SslMode::Require);
        // The default is libpq's prefer; a root file upgrades require to verify-ca.
        assert_eq!(split_url("postgres://h/db").unwrap().0.mode, SslMode::Prefer);
        assert_eq!(split_url("postgres://h/db?sslmode=require&sslrootcert=/ca").unwrap().0.mode, SslMode::VerifyCa);
        assert_eq!(split_url("postgres://h/db?sslmode=require&sslrootcert=system").unwrap().0.mode, SslMode::Require);
        assert!(split_url("postgres://h/db?sslmode=sometimes").unwrap_err().contains("sometimes"));
        assert!(split_url("postgres://h/db?sslcert=/c").unwrap_err().contains("sslkey"));
    }

    #[test]
    fn tls_failures_say_which_and_what_to_set() {
        let tls = split_url("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap().0;
        let unknown = tls.explain("h", "invalid peer certificate: UnknownIssuer").unwrap();
        assert!(unknown.contains("set sslrootcert") && unknown.contains("/ca.pem"), "{unknown}");
        let name = tls.explain("127.0.0.1", "invalid peer certificate: certificate not valid for name").unwrap();
        assert!(name.contains("`127.0.0.1`") && name.contains("verify-ca"), "{name}");
        let none = tls.explain("h", "server does not support TLS").unwrap();
        assert!(none.contains("does not offer TLS"), "{none}");
        let hba = tls
            .explain("h", "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption")
            .unwrap();
        assert!(hba.contains("set sslmode"), "{hba}");
        assert_eq!(tls.explain("h", "password authentication failed"), None);
    }
}
