//! The remote tests' harness: a broker running in the test process (stopped on drop, restartable
//! on the same `ipc://` endpoint), the `[broker]` table the daemons share, a `triggerctl` whose
//! output lines are read as they come, and small helpers around the control socket.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::common::{test_root, wait_for, Daemon, DEADLINE};
use triggerd::control::{Reply, Request};
use triggerd::remote::RemoteStatus;
use triggerd_remote::broker::{self, BrokerConfig, Role, Store, DEFAULT_TEAM};
use triggerd_remote::security::public_path;
use triggerd_remote::{KeyPair, Mechanism};

/// A broker running in a thread of the test, on `ipc://DIR/broker.ipc`; stopped on drop.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub config: BrokerConfig,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Broker {
    pub fn start(auth: bool) -> Self {
        Self::start_with(match auth {
            true => Mechanism::Plain,
            false => Mechanism::None,
        })
    }

    /// A broker with `security = "curve"`: its key pair is made first (`secret.key`).
    pub fn start_curve() -> Self {
        Self::start_with(Mechanism::Curve)
    }

    /// A broker without authentication serving metrics on a free loopback port, written to
    /// `DIR/metrics` (see [`Broker::metrics_address`]). Used by tests/metrics.rs.
    #[allow(dead_code)]
    pub fn start_with_metrics() -> Self {
        let mut broker = Self::prepare(Mechanism::None);
        broker.config.metrics = Some("127.0.0.1:0".into());
        broker.config.metrics_file = Some(broker.dir.path().join("metrics"));
        broker.resume();
        broker
    }

    /// The metrics endpoint's bound address.
    #[allow(dead_code)]
    pub fn metrics_address(&self) -> String {
        let file = self
            .config
            .metrics_file
            .as_ref()
            .expect("metrics configured");
        std::fs::read_to_string(file)
            .expect("metrics file")
            .trim()
            .to_string()
    }

    fn start_with(security: Mechanism) -> Self {
        let mut broker = Self::prepare(security);
        broker.resume();
        broker
    }

    /// The broker's dir and config, not started yet.
    fn prepare(security: Mechanism) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-broker")
            .tempdir_in(test_root())
            .expect("tempdir");
        let config = BrokerConfig {
            bind: vec![format!("ipc://{}/broker.ipc", dir.path().display())],
            store: dir.path().join("store.db"),
            heartbeat: Duration::from_millis(250),
            auth: security != Mechanism::None,
            // Explicit, so a broker key installed on this machine cannot switch it to CURVE.
            security: Some(security),
            secret_key: dir.path().join("secret.key"),
            endpoint_file: Some(dir.path().join("endpoint")),
            ..BrokerConfig::default()
        };
        if security == Mechanism::Curve {
            let pair = KeyPair::generate().expect("libzmq has CURVE");
            pair.save(&config.secret_key).expect("broker key");
        }
        Self {
            dir,
            config,
            running: None,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.config.bind[0]
    }

    /// Starts (again) on the same endpoint; returns once it listens.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "already running");
        let endpoint_file = self.dir.path().join("endpoint");
        let _ = std::fs::remove_file(&endpoint_file);
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, config) = (Arc::clone(&stop), self.config.clone());
        let thread = std::thread::spawn(move || {
            broker::run(&config, &flag).expect("broker runs");
        });
        self.running = Some((stop, thread));
        wait_for("the broker to listen", DEADLINE, || {
            endpoint_file.exists().then_some(())
        });
    }

    /// Stops the broker (its workers are told to DISCONNECT; clients just lose it).
    pub fn pause(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            thread.join().expect("broker thread");
        }
    }

    /// The broker's public key (Z85), as `server_key` takes it.
    pub fn server_key(&self) -> String {
        let public = std::fs::read_to_string(public_path(&self.config.secret_key));
        public.expect("a CURVE broker").trim().to_string()
    }

    /// A host key pair made by `triggerd keygen` (secret file returned) and, when `register`,
    /// its public key registered at the broker as `role NAME`.
    pub fn host_key(&self, role: Role, name: &str, register: bool) -> PathBuf {
        let secret = self.dir.path().join(format!("{name}.key"));
        let out = Command::new(env!("CARGO_BIN_EXE_triggerd"))
            .args(["keygen", "--secret-key"])
            .arg(&secret)
            .output()
            .expect("triggerd keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if register {
            let store = Store::open(&self.config.store).expect("store");
            store
                .add_key_identity(role, name, &public, DEFAULT_TEAM)
                .expect("register key");
        }
        secret
    }

    /// A token file for a new identity, written next to the broker's store.
    pub fn token_file(&self, role: Role, name: &str) -> PathBuf {
        let store = Store::open(&self.config.store).expect("store");
        let token = store
            .add_identity(role, name, DEFAULT_TEAM)
            .expect("add identity");
        let path = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).expect("token file");
        path
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.pause();
    }
}

/// The `[broker]` table every daemon of a test uses (fast heartbeats and resends).
pub fn broker_table(broker: &Broker, extra: &str) -> String {
    format!(
        "[broker]\nendpoint = \"{}\"\nspool = \"{{dir}}/spool\"\nheartbeat = \"250ms\"\ntimeout = \"2s\"\n{extra}\n",
        broker.endpoint()
    )
}

pub fn remote_status(daemon: &mut Daemon) -> RemoteStatus {
    *daemon.status().remote
}

/// Waits until the daemon's worker for `service` has connected to the broker.
pub fn wait_serving(daemon: &mut Daemon, service: &str) {
    wait_for(&format!("a worker for {service}"), DEADLINE, || {
        let status = daemon.try_status()?;
        status
            .remote
            .services
            .iter()
            .any(|s| s.name == service && s.running && s.connections > 0)
            .then_some(())
    });
}

pub fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn fire(daemon: &Daemon, rule: &str, data: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let request = Request::Fire {
        rule: rule.into(),
        data: Some(data.into()),
    };
    match runtime.block_on(triggerd::control::request(&daemon.socket, &request)) {
        Ok(Reply::Done(_)) => {}
        other => panic!("fire {rule}: {other:?}"),
    }
}

/// The worker host: serves `central` by appending every payload to `{dir}/central.log`.
pub fn central_log_host(broker: &Broker, broker_extra: &str) -> Daemon {
    let mut daemon = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"central\"\nfile = \"{{dir}}/central.log\"\n",
        broker_table(broker, broker_extra)
    ));
    wait_serving(&mut daemon, "central");
    daemon
}
/// A running `triggerctl` whose stdout lines arrive on a channel.
pub struct Ctl {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Ctl {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_program(env!("CARGO_BIN_EXE_triggerctl"), args)
    }

    /// Any program whose stdout lines the test reads (a peer written in Python, say).
    pub fn spawn_program(program: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn triggerctl");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line from triggerctl")
    }

    pub fn exit_code(&mut self) -> Option<i32> {
        wait_for("triggerctl to exit", DEADLINE, || {
            self.child.try_wait().ok().flatten()
        })
        .code()
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
