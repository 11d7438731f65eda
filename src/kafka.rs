//! What the Kafka sink and source share: the pass-through librdkafka options, read from
//! `librdkafka_options` with the settings tidemark owns refused and credentials kept secret.

use std::fmt;

use rdkafka::ClientConfig;

use crate::settings::{Diag, Secret, Section};

/// A librdkafka property; values of properties that hold credentials are kept as secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientOption {
    pub name: String,
    pub value: Secret,
    pub secret: bool,
}

impl ClientOption {
    /// What `/connectors`, `check` and the log may show.
    pub fn shown(&self) -> String {
        if self.secret {
            "***".into()
        } else {
            self.value.expose().to_string()
        }
    }
}

impl fmt::Debug for ClientOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.shown())
    }
}

/// Whether a librdkafka property holds a credential (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.jaas.config`, …).
fn is_secret(name: &str) -> bool {
    ["password", "secret", "jaas", "key.pem", "token"].iter().any(|w| name.contains(w))
}

/// Read `librdkafka_options`: every property as a string; those in `owned` (set by tidemark,
/// `why` says to what) are refused.
pub fn read_options(s: &mut Section, d: &mut Diag, owned: &[&str], why: &str) -> Vec<ClientOption> {
    let mut options = Vec::new();
    if let Some(mut t) = s.opt_table(d, "librdkafka_options") {
        for name in t.keys() {
            let value = t.opt_str(d, &name);
            if owned.contains(&name.as_str()) {
                d.error(t.key(&name), format!("is set by tidemark ({why})"));
                continue;
            }
            if let Some(value) = value {
                options.push(ClientOption { secret: is_secret(&name), name, value: Secret::new(value) });
            }
        }
        t.finish(d, &[]);
    }
    options
}

/// The options as `/connectors` shows them.
pub fn describe_options(options: &[ClientOption]) -> serde_json::Value {
    serde_json::Value::Object(options.iter().map(|o| (o.name.clone(), o.shown().into())).collect())
}

/// A client configuration: tidemark's `defaults`, then the user's options over them, then the
/// settings tidemark `owns` (which the configuration refuses in `librdkafka_options`).
pub fn client(defaults: &[(&str, &str)], options: &[ClientOption], owns: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for o in options {
        c.set(&o.name, o.value.expose());
    }
    for (k, v) in owns {
        c.set(*k, *v);
    }
    c
}
