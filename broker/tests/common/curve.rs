//! CURVE brokers for the tests: a `triggerd-broker` with `security = "curve"` and its key pair
//! from `keygen`, and host key pairs registered with `identity add --key`.

use triggerd_remote::security::{decode_key, encode_key};
use triggerd_remote::{ClientOptions, Credentials, KeyPair, Worker};

use super::{admin, fast_worker, Broker, WorkerThread};

/// A broker with `security = "curve"` and team `red`; keys are registered per test.
pub struct CurveBroker {
    pub _dir: tempfile::TempDir,
    pub broker: Broker,
    pub server: [u8; 32],
}

pub fn curve_broker() -> CurveBroker {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("secret.key");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        &format!(
            "security = \"curve\"\nsecret_key = \"{}\"\nheartbeat = \"100ms\"",
            key.display()
        ),
    );
    let public = admin(dir.path(), &["keygen"]);
    let server = decode_key(public.trim()).expect("keygen prints the public key");
    admin(dir.path(), &["team", "add", "red"]);
    let broker = Broker::start(dir.path());
    CurveBroker {
        _dir: dir,
        broker,
        server,
    }
}

impl CurveBroker {
    /// A new host key pair registered as `role NAME` of `team`.
    pub fn host(&self, role: &str, name: &str, team: &str) -> KeyPair {
        let pair = KeyPair::generate().expect("CURVE available");
        let public = encode_key(&pair.public);
        self.broker.admin(&[
            "identity", "add", role, name, "--key", &public, "--team", team,
        ]);
        pair
    }

    pub fn creds(&self, host: &KeyPair) -> Credentials {
        Credentials::Curve {
            server: self.server,
            host: host.clone(),
        }
    }

    pub fn client(&self, host: &KeyPair) -> ClientOptions {
        ClientOptions {
            credentials: self.creds(host),
            retries: 0,
        }
    }

    /// A Rust worker serving `service` with `host`'s keys.
    pub fn worker(&self, host: &KeyPair, service: &str) -> WorkerThread {
        let mut options = fast_worker(&self.broker.endpoint, service);
        options.credentials = self.creds(host);
        WorkerThread::start(Worker::new(options))
    }

    /// The environment a Python peer needs for CURVE with `host`'s keys.
    pub fn py_env(&self, host: &KeyPair) -> Vec<(&'static str, String)> {
        vec![
            ("MDP_CURVE_SERVER", encode_key(&self.server)),
            ("MDP_CURVE_PUBLIC", encode_key(&host.public)),
            ("MDP_CURVE_SECRET", encode_key(&host.secret)),
        ]
    }
}

pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
