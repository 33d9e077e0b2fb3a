//! CURVE against the real broker: its key pair from `triggerd-broker keygen`, hosts' public
//! keys registered with `identity add --key`, a pyzmq MDP client and worker written from the
//! RFCs working with their keys, unregistered keys refused and logged, and a TCP relay that
//! records every byte on the wire: under CURVE neither the payload nor any key shows, under
//! PLAIN the payload and the token do (so the check can fail).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use triggerd_remote::security::encode_key;
use triggerd_remote::{Client, ClientOptions, Credentials, KeyPair, Worker};

#[test]
fn curve_peers_with_registered_keys_work_and_unregistered_keys_are_refused() {
    let b = curve_broker();
    let ep = &b.broker.endpoint;
    let w1 = b.host("worker", "w1", "red");
    let c1 = b.host("client", "c1", "red");
    let _worker = b.worker(&w1, "echo");
    wait_service_up(ep, "echo", b.client(&c1));

    // pyzmq client from the RFC, with its CURVE keys.
    let env = b.py_env(&c1);
    let mut py = python_peer(&["client2", ep, "echo", "2"], &env_refs(&env));
    assert_eq!(py.line(T).as_deref(), Some("FINAL hello0"));
    assert_eq!(py.line(T).as_deref(), Some("FINAL hello1"));
    assert_eq!(py.wait(T), Some(0));

    // pyzmq worker with its own registered key serves a service the Rust client calls.
    let w2 = b.host("worker", "w2", "red");
    let env = b.py_env(&w2);
    let py_worker = python_peer(&["worker2", ep, "pysvc", "100"], &env_refs(&env));
    wait_service_up(ep, "pysvc", b.client(&c1));
    let mut client = Client::connect(ep, b.client(&c1)).expect("client");
    let reply = client
        .request("pysvc", "", b"over curve", T, |_| {})
        .expect("served");
    assert_eq!(reply.body, vec![b"py2:over curve".to_vec()]);
    assert_eq!(py_worker.line(T).as_deref(), Some("REQ over curve"));

    // The same peers with a key the broker does not know: refused, logged.
    let stranger = KeyPair::generate().expect("keys");
    let mut bad = Client::connect(ep, b.client(&stranger)).expect("client");
    assert!(bad
        .request("echo", "", b"x", Duration::from_millis(500), |_| {})
        .is_err());
    let env = b.py_env(&stranger);
    let mut py_bad = python_peer(&["client2", ep, "echo", "1"], &env_refs(&env));
    assert_eq!(py_bad.wait(Duration::from_secs(30)), Some(1), "TIMEOUT");
    let stranger_key = encode_key(&stranger.public);
    let logged = poll(T, || {
        let log = b.broker.log();
        (log.contains("refused: unregistered CURVE key") && log.contains(&stranger_key))
            .then_some(())
    });
    assert!(logged.is_some(), "{}", b.broker.log());

    // A registered key with the wrong broker key never gets through either.
    let wrong_server = Credentials::Curve {
        server: stranger.public,
        host: c1.clone(),
    };
    let mut lost = Client::connect(
        ep,
        ClientOptions {
            credentials: wrong_server,
            retries: 0,
        },
    )
    .expect("client");
    assert!(lost
        .request("echo", "", b"x", Duration::from_millis(500), |_| {})
        .is_err());
    works(ep, b.client(&c1));
}

/// A TCP relay on 127.0.0.1:0 in front of `target`, recording the bytes of both directions.
struct Relay {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        let target = target.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, flag) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(inbound), Ok(outbound)) = (inbound, TcpStream::connect(&target)) else {
                    continue;
                };
                for (from, to) in [
                    (
                        inbound.try_clone().expect("clone"),
                        outbound.try_clone().expect("clone"),
                    ),
                    (outbound, inbound),
                ] {
                    let record = record.clone();
                    std::thread::spawn(move || copy(from, to, &record));
                }
            }
        });
        Relay { port, bytes, stop }
    }

    fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn captured(&self) -> Vec<u8> {
        self.bytes.lock().expect("lock").clone()
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, record: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        record.lock().expect("lock").extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const PAYLOAD: &[u8] = b"secret payload from c1, 7f3a9c";

#[test]
fn on_the_wire_curve_hides_payload_keys_and_plain_shows_them() {
    let b = curve_broker();
    let w1 = b.host("worker", "w1", "red");
    let c1 = b.host("client", "c1", "red");
    let relay = Relay::start(&b.broker.endpoint);
    let _worker = {
        let mut options = fast_worker(&relay.endpoint(), "echo");
        options.credentials = b.creds(&w1);
        WorkerThread::start(Worker::new(options))
    };
    wait_service_up(&relay.endpoint(), "echo", b.client(&c1));
    let mut client = Client::connect(&relay.endpoint(), b.client(&c1)).expect("client");
    let reply = client
        .request("echo", "", PAYLOAD, T, |_| {})
        .expect("served");
    assert_eq!(reply.body, vec![PAYLOAD.to_vec()]);
    let wire = relay.captured();
    assert!(wire.len() > 1000, "the relay saw the traffic");
    assert!(!contains(&wire, PAYLOAD), "payload in clear under CURVE");
    for pair in [&w1, &c1] {
        for key in [pair.public, pair.secret] {
            assert!(!contains(&wire, &key), "a raw key on the wire");
            assert!(!contains(&wire, encode_key(&key).as_bytes()), "a Z85 key");
        }
    }
    assert!(!contains(&wire, &b.server), "the broker's public key");

    // The same exchange under PLAIN: payload and token cross in clear.
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        "security = \"plain\"\nheartbeat = \"100ms\"",
    );
    let worker_token = admin(dir.path(), &["token", "add", "worker", "w1"]);
    let client_token = admin(dir.path(), &["identity", "add", "client", "c1"]);
    let plain_broker = Broker::start(dir.path());
    let relay = Relay::start(&plain_broker.endpoint);
    let _plain_worker = {
        let mut options = fast_worker(&relay.endpoint(), "echo");
        options.credentials = plain("w1", worker_token.trim());
        WorkerThread::start(Worker::new(options))
    };
    let options = creds("c1", client_token.trim());
    wait_service_up(&relay.endpoint(), "echo", options.clone());
    let mut client = Client::connect(&relay.endpoint(), options).expect("client");
    client
        .request("echo", "", PAYLOAD, T, |_| {})
        .expect("served");
    let wire = relay.captured();
    assert!(
        contains(&wire, PAYLOAD),
        "the capture works: PLAIN shows the payload"
    );
    assert!(
        contains(&wire, client_token.trim().as_bytes()),
        "and the token"
    );
}

#[test]
fn admin_verbs_run_as_root_act_as_the_state_directory_owner() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    nix::unistd::chown(&state, Some(nobody.uid), Some(nobody.gid)).expect("chown");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{0}/store.db\"\nsecret_key = \"{0}/secret.key\"\n",
            state.display()
        ),
    )
    .expect("config");
    for verb in [&["keygen"][..], &["team", "add", "blue"]] {
        let out = std::process::Command::new(broker_bin())
            .arg("--config")
            .arg(&config)
            .args(verb)
            .output()
            .expect("run");
        assert!(out.status.success(), "{verb:?}: {out:?}");
    }
    for file in ["secret.key", "secret.key.pub", "store.db"] {
        let meta = std::fs::metadata(state.join(file)).expect(file);
        assert_eq!(
            meta.uid(),
            nobody.uid.as_raw(),
            "{file} belongs to the broker's user"
        );
    }
}

#[test]
fn a_curve_broker_without_its_key_pair_names_the_fix_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        &format!(
            "security = \"curve\"\nsecret_key = \"{}\"",
            dir.path().join("absent.key").display()
        ),
    );
    let out = std::process::Command::new(broker_bin())
        .arg("--config")
        .arg(dir.path().join("broker.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("triggerd-broker keygen"), "{stderr}");
}
