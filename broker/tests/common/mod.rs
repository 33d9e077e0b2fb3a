//! Shared test harness: real `triggerd-broker` processes and Python peers, each killed by a
//! Drop guard; polling with deadlines, never fixed sleeps or ports.
// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use triggerd_remote::{Client, ClientOptions, Worker, WorkerOptions};

mod curve;
#[allow(unused_imports)]
pub use curve::*;

pub const PYTHON: &str = "/usr/bin/python3";

pub use triggerd_testkit::poll;

/// A child process killed (SIGKILL) and reaped on drop; stdout lines arrive on `lines`.
pub struct ChildGuard {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl ChildGuard {
    pub fn spawn(mut command: Command) -> ChildGuard {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn child");
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        ChildGuard { child, lines: rx }
    }

    /// Next stdout line within `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the exit code within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        poll(timeout, || {
            self.child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| s.code().unwrap_or(-1))
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `triggerd-broker` with its own temp dir, config and store.
pub struct Broker {
    pub dir: PathBuf,
    pub endpoint: String,
    pub process: ChildGuard,
}

pub fn broker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_triggerd-broker")
}

impl Broker {
    /// Starts a broker in `dir` binding `bind` with extra TOML lines.
    /// Writes the config a later [`Broker::start_in`] uses (admin verbs need it first).
    pub fn configure(dir: &Path, bind: &str, extra: &str) {
        let text = format!(
            "bind = [\"{bind}\"]\nstore = \"{}\"\nendpoint_file = \"{}\"\n{extra}\n",
            dir.join("store.db").display(),
            dir.join("endpoint").display()
        );
        std::fs::write(dir.join("broker.toml"), text).expect("write config");
    }

    /// Starts a broker in `dir` binding `bind` with extra TOML lines; its log goes to
    /// `dir/broker.log`.
    pub fn start_in(dir: &Path, bind: &str, extra: &str) -> Broker {
        Broker::configure(dir, bind, extra);
        Broker::start(dir)
    }

    /// Starts a broker with the config already in `dir`.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_wrapped(dir, &[])
    }

    /// [`Broker::start`] through a wrapper command (its argv before the broker's).
    pub fn start_wrapped(dir: &Path, wrapper: &[&str]) -> Broker {
        let endpoint_file = dir.join("endpoint");
        let _ = std::fs::remove_file(&endpoint_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .expect("log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(broker_bin());
                c
            }
            None => Command::new(broker_bin()),
        };
        command
            .arg("--config")
            .arg(dir.join("broker.toml"))
            .env("RUST_LOG", "info")
            .stderr(log);
        let process = ChildGuard::spawn(command);
        let endpoint = poll(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&endpoint_file).ok()?;
            text.lines().next().map(str::to_string)
        })
        .expect("broker wrote its endpoint");
        Broker {
            dir: dir.to_path_buf(),
            endpoint,
            process,
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Runs an admin verb against this broker's config; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        admin(&self.dir, args)
    }
}

pub fn admin(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(broker_bin())
        .arg("--config")
        .arg(dir.join("broker.toml"))
        .args(args)
        .output()
        .expect("run admin verb");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Python MDP peer from tests/py/mdp_peer.py.
pub fn python_peer(args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/mdp_peer.py");
    let mut command = Command::new(PYTHON);
    command.arg(script).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    ChildGuard::spawn(command)
}

/// A Rust worker on its own thread, stopped and joined on drop.
pub struct WorkerThread {
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<()>>,
    pub stats: Arc<triggerd_remote::worker::WorkerStats>,
}

impl WorkerThread {
    pub fn start(worker: Worker) -> WorkerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = worker.stats();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            worker.run(&flag).expect("worker runs");
        });
        WorkerThread {
            stop,
            thread: Some(thread),
            stats,
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Worker options for tests: fast heartbeats and reconnects.
pub fn fast_worker(endpoint: &str, service: &str) -> WorkerOptions {
    let mut o = WorkerOptions::new(endpoint, service);
    o.heartbeat = Duration::from_millis(100);
    o.reconnect_min = Duration::from_millis(50);
    o.reconnect_max = Duration::from_millis(400);
    o
}

/// Asks the broker (mmi.service) until `service` has workers.
pub fn wait_service_up(endpoint: &str, service: &str, options: triggerd_remote::ClientOptions) {
    let mut client = triggerd_remote::Client::connect(endpoint, options).expect("client");
    let up = poll(Duration::from_secs(20), || {
        let reply = client
            .request(
                "mmi.service",
                "",
                service.as_bytes(),
                Duration::from_secs(2),
                |_| {},
            )
            .ok()?;
        (reply.body.first().map(Vec::as_slice) == Some(b"200")).then_some(())
    });
    assert!(up.is_some(), "service {service} never came up");
}

pub const T: Duration = Duration::from_secs(20);

pub fn creds(name: &str, token: &str) -> ClientOptions {
    ClientOptions {
        credentials: plain(name, token),
        retries: 0,
    }
}

/// PLAIN credentials.
pub fn plain(name: &str, token: &str) -> triggerd_remote::Credentials {
    triggerd_remote::Credentials::Plain {
        identity: name.into(),
        token: token.into(),
    }
}

/// A broker with `auth = true`, a worker token `w1` serving `echo` and a client token `c1`.
pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub broker: Broker,
    pub worker_token: String,
    pub client_token: String,
    pub _worker: WorkerThread,
}

pub fn setup() -> Setup {
    setup_with("", None)
}

/// [`setup`] with extra broker config lines, the broker started under `wrapper` (e.g.
/// `["prlimit", "--nofile=200"]`) when given.
pub fn setup_with(extra: &str, wrapper: Option<&[&str]>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        &format!("auth = true\nheartbeat = \"100ms\"\nmax_message = 1048576\n{extra}"),
    );
    let worker_token = admin(dir.path(), &["token", "add", "worker", "w1"])
        .trim()
        .to_string();
    let client_token = admin(dir.path(), &["token", "add", "client", "c1"])
        .trim()
        .to_string();
    assert_eq!(worker_token.len(), 64);
    let broker = Broker::start_wrapped(dir.path(), wrapper.unwrap_or(&[]));
    let mut options = fast_worker(&broker.endpoint, "echo");
    options.credentials = plain("w1", &worker_token);
    let worker = WorkerThread::start(Worker::new(options));
    wait_service_up(&broker.endpoint, "echo", creds("c1", &client_token));
    Setup {
        _dir: dir,
        broker,
        worker_token,
        client_token,
        _worker: worker,
    }
}

/// Asserts `echo` answers a request from a client with `options`.
pub fn works(endpoint: &str, options: ClientOptions) {
    let mut client = Client::connect(endpoint, options).expect("client");
    let reply = client
        .request("echo", "", b"still here", T, |_| {})
        .expect("served");
    assert_eq!(
        (reply.status, reply.body),
        (0, vec![b"still here".to_vec()]),
        "echo's answer (status 124: the broker timed the request out)"
    );
}

/// A process's resident memory in KiB (VmRSS from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("kB")
}

/// The broker's own counters (`mmi.status`, one JSON object), asked on `client`'s connection.
pub fn broker_status(client: &mut Client) -> serde_json::Value {
    let reply = client
        .request("mmi.status", "", b"", T, |_| {})
        .expect("mmi.status answered");
    serde_json::from_slice(&reply.body[0]).expect("status is JSON")
}
