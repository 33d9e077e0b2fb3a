//! Authentication and hostile input against the real broker: tokens from the admin verbs,
//! PLAIN via ZAP (the broker's store holds only hashes), wrong and removed tokens refused and
//! logged, roles enforced, and garbage, unknown protocols and a 100 MiB frame refused while
//! everyone else keeps being served.

mod common;

use std::time::Duration;

use common::*;
use triggerd_remote::{Client, ClientOptions};

#[test]
fn tokens_are_checked_and_roles_enforced() {
    let s = setup();
    let ep = &s.broker.endpoint;
    works(ep, creds("c1", &s.client_token));
    // A plain MDP client with PLAIN credentials needs nothing else.
    let mut py = python_peer(
        &["client1", ep, "echo", "1"],
        &[("MDP_USER", "c1"), ("MDP_TOKEN", &s.client_token)],
    );
    assert_eq!(py.line(T).as_deref(), Some("REPLY hello0"));
    assert_eq!(py.wait(T), Some(0));

    for (name, token) in [("c1", "0".repeat(64)), ("nobody", s.client_token.clone())] {
        let mut bad = Client::connect(ep, creds(name, &token)).expect("client");
        let result = bad.request("echo", "", b"x", Duration::from_millis(500), |_| {});
        assert!(result.is_err(), "{name} got through");
    }
    let mut anonymous = Client::connect(ep, ClientOptions::default()).expect("client");
    assert!(anonymous
        .request("echo", "", b"x", Duration::from_millis(500), |_| {})
        .is_err());
    let log = poll(T, || {
        let log = s.broker.log();
        (log.contains("refused: unknown identity or wrong token") && log.contains("nobody"))
            .then_some(log)
    });
    assert!(log.is_some(), "{}", s.broker.log());

    // A client identity may not serve: its READY is refused.
    let rogue = python_peer(
        &["worker1", ep, "echo", "100"],
        &[("MDP_USER", "c1"), ("MDP_TOKEN", &s.client_token)],
    );
    assert_eq!(rogue.line(T).as_deref(), Some("DISCONNECT"));
    assert!(s.broker.log().contains("identity is not a worker"));

    // A removed identity is refused from its next connection on.
    s.broker.admin(&["token", "remove", "c1"]);
    let mut removed = Client::connect(ep, creds("c1", &s.client_token)).expect("client");
    assert!(removed
        .request("echo", "", b"x", Duration::from_millis(500), |_| {})
        .is_err());
    // The worker identity may also send requests (the forward plugin does).
    works(ep, creds("w1", &s.worker_token));

    let listing = s.broker.admin(&["service", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("json");
    let echo = parsed
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "echo"))
        .unwrap_or_else(|| panic!("{listing}\n{}", s.broker.log()));
    assert!(
        echo["workers"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("w1 (")),
        "{listing}"
    );
}

#[test]
fn garbage_unknown_protocols_and_huge_frames_are_refused() {
    let mut s = setup();
    let ep = &s.broker.endpoint;
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::DEALER).expect("socket");
    raw.set_linger(0).expect("linger");
    raw.set_plain_username(Some("c1")).expect("user");
    raw.set_plain_password(Some(&s.client_token))
        .expect("password");
    raw.connect(ep).expect("connect");
    let garbage: Vec<Vec<Vec<u8>>> = vec![
        vec![b"MDPX99".to_vec(), vec![1], b"echo".to_vec()],
        vec![b"GET / HTTP/1.1".to_vec()],
        vec![vec![], b"MDPW01".to_vec(), vec![0x42]],
        vec![
            b"MDPW02".to_vec(),
            vec![0x03],
            b"not-a-token".to_vec(),
            vec![],
            b"x".to_vec(),
        ],
        vec![b"MDPW02".to_vec(), vec![0x05]],
        vec![vec![0xff; 1000]; 2000],
    ];
    for frames in &garbage {
        raw.send_multipart(frames, 0).expect("send garbage");
    }
    works(ep, creds("c1", &s.client_token));
    let log = poll(T, || {
        let log = s.broker.log();
        (log.contains("unknown protocol frame") && log.contains("more than 1024 frames"))
            .then_some(log)
    });
    assert!(log.is_some(), "{}", s.broker.log());

    // 100 MiB in one frame, above max_message: libzmq drops that connection, nobody else.
    let huge = ctx.socket(zmq::DEALER).expect("socket");
    huge.set_linger(0).expect("linger");
    huge.set_plain_username(Some("c1")).expect("user");
    huge.set_plain_password(Some(&s.client_token))
        .expect("password");
    let monitor_endpoint = format!("inproc://huge-monitor-{}", std::process::id());
    huge.monitor(&monitor_endpoint, zmq::SocketEvent::DISCONNECTED as i32)
        .expect("monitor");
    let monitor = ctx.socket(zmq::PAIR).expect("socket");
    monitor.connect(&monitor_endpoint).expect("connect monitor");
    huge.connect(ep).expect("connect");
    let frame = vec![0u8; 100 * 1024 * 1024];
    huge.send_multipart([b"MDPC02".as_slice(), &[1], b"echo", &frame], 0)
        .expect("send huge");
    drop(frame);
    works(ep, creds("c1", &s.client_token));
    let closed = poll(T, || {
        s.broker
            .log()
            .contains("refused: oversized frame")
            .then_some(())
    });
    assert!(closed.is_some(), "{}", s.broker.log());
    let mut client = Client::connect(ep, creds("c1", &s.client_token)).expect("client");
    for i in 0..100 {
        let reply = client
            .request("echo", "", format!("{i}").as_bytes(), T, |_| {})
            .expect("served");
        assert_eq!(reply.status, 0);
    }
    assert!(
        s.broker.process.child.try_wait().expect("status").is_none(),
        "broker died"
    );
}

#[test]
fn admin_verbs_validate_their_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(dir.path(), "tcp://127.0.0.1:*", "auth = true");
    let run = |args: &[&str]| {
        std::process::Command::new(broker_bin())
            .arg("--config")
            .arg(dir.path().join("broker.toml"))
            .args(args)
            .output()
            .expect("run")
    };
    for bad in [
        &["service", "set", "web", "--algorithm", "random"][..],
        &["service", "set", "web", "--timeout", "soon"],
        &["token", "add", "admin", "root"],
    ] {
        assert_eq!(run(bad).status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(run(&["token", "remove", "ghost"]).status.code(), Some(1));
    assert!(run(&[
        "service",
        "set",
        "web",
        "--algorithm",
        "serial",
        "--timeout",
        "5s"
    ])
    .status
    .success());
    let listing = String::from_utf8_lossy(&run(&["service", "list"]).stdout).into_owned();
    let row = listing
        .lines()
        .find(|l| l.starts_with("web"))
        .expect("web listed");
    assert!(row.contains("serial") && row.contains("5s"), "{listing}");
}
