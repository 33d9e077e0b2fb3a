//! Plain Majordomo peers (pyzmq, written from RFC 7 and RFC 18, no triggerd code) against the
//! real `triggerd-broker`, in every client/worker version pairing, plus MMI.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// Runs a Python client to completion; returns its stdout lines.
fn run_client(mode: &str, endpoint: &str, service: &str, count: usize) -> Vec<String> {
    let mut client = python_peer(&[mode, endpoint, service, &count.to_string()], &[]);
    let code = client.wait(T).expect("client finished");
    let lines: Vec<String> = client.lines.try_iter().collect();
    assert_eq!(code, 0, "{mode} failed: {lines:?}");
    lines
}

#[test]
fn python_mdp_peers_work_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_in(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    );
    let ep = broker.endpoint.as_str();
    let _w1 = python_peer(&["worker1", ep, "py1", "100"], &[]);
    let _w2 = python_peer(&["worker2", ep, "py2", "100"], &[]);
    wait_service_up(ep, "py1", Default::default());
    wait_service_up(ep, "py2", Default::default());

    // MDP/0.1 client ↔ MDP/0.1 worker.
    let lines = run_client("client1", ep, "py1", 3);
    assert_eq!(
        lines,
        vec!["REPLY py1:hello0", "REPLY py1:hello1", "REPLY py1:hello2"]
    );

    // MDP/0.2 client ↔ MDP/0.2 worker: PARTIALs stream, then one FINAL.
    let lines = run_client("client2", ep, "py2", 2);
    assert_eq!(
        lines,
        vec![
            "PARTIAL part0",
            "PARTIAL part1",
            "FINAL py2:hello0",
            "PARTIAL part0",
            "PARTIAL part1",
            "FINAL py2:hello1"
        ]
    );

    // Cross versions: a 0.1 client gets the streamed parts gathered into its one reply;
    // a 0.2 client gets a 0.1 worker's reply as FINAL.
    let lines = run_client("client1", ep, "py2", 1);
    assert_eq!(
        lines,
        vec!["REPLY part0", "REPLY part1", "REPLY py2:hello0"]
    );
    let lines = run_client("client2", ep, "py1", 1);
    assert_eq!(lines, vec!["FINAL py1:hello0"]);

    // A triggerd client against a plain worker: status 0, body untouched.
    let mut client = triggerd_remote::Client::connect(ep, Default::default()).expect("client");
    let mut parts = Vec::new();
    let reply = client
        .request("py2", "", b"x", T, |b| parts.extend(b.to_vec()))
        .expect("reply");
    assert_eq!(reply.status, 0);
    assert_eq!(parts, vec![b"part0".to_vec(), b"part1".to_vec()]);
    assert_eq!(reply.body, vec![b"py2:x".to_vec()]);
}

#[test]
fn mmi_service_answers_200_404_501() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_in(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    );
    let ep = broker.endpoint.as_str();
    let _w = python_peer(&["worker1", ep, "known", "100"], &[]);
    wait_service_up(ep, "known", Default::default());
    let mut mmi = python_peer(&["mmi", ep, "known"], &[]);
    assert_eq!(mmi.line(T).as_deref(), Some("MMI 200"));
    assert_eq!(mmi.wait(T), Some(0));
    let mut mmi = python_peer(&["mmi", ep, "unknown"], &[]);
    assert_eq!(mmi.line(T).as_deref(), Some("MMI 404"));
    assert_eq!(mmi.wait(T), Some(0));
    let mut client = triggerd_remote::Client::connect(ep, Default::default()).expect("client");
    let reply = client
        .request("mmi.other", "", b"", T, |_| {})
        .expect("reply");
    assert_eq!(reply.body, vec![b"501".to_vec()]);
    // A worker may not register an mmi.* service: the broker disconnects it.
    let mut rogue = python_peer(&["worker1", ep, "mmi.service", "100"], &[]);
    assert_eq!(rogue.line(T).as_deref(), Some("DISCONNECT"));
    assert_eq!(rogue.wait(T), Some(3));
}
