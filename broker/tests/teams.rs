//! Teams at the real broker (CURVE identities): the cross-team table (own ✔, foreign private
//! ✘ with status 77, shared-with-us ✔, public ✔, a worker registering a foreign service ✘
//! with DISCONNECT), MMI 404 for what a team may not see, `service list` with team, shares and
//! load, de-duplication keyed by client, and
//! a store from before teams whose tokens still work under `security = "plain"`.

mod common;

use std::time::Duration;

use common::*;
use triggerd_remote::ext::STATUS_FORBIDDEN;
use triggerd_remote::{Client, Event, Reply};

fn mmi(client: &mut Client, service: &str) -> Vec<u8> {
    let reply = client
        .request("mmi.service", "", service.as_bytes(), T, |_| {})
        .expect("mmi answered");
    reply.body[0].clone()
}

#[test]
fn the_cross_team_table() {
    let b = curve_broker();
    let ep = &b.broker.endpoint;
    for team in ["blue", "green"] {
        b.broker.admin(&["team", "add", team]);
    }
    for (service, team) in [
        ("red-own", "red"),
        ("blue-private", "blue"),
        ("blue-shared", "blue"),
    ] {
        b.broker.admin(&["service", "set", service, "--team", team]);
    }
    b.broker
        .admin(&["service", "share", "blue-shared", "--with", "red"]);
    b.broker.admin(&[
        "service",
        "set",
        "green-public",
        "--team",
        "green",
        "--public",
    ]);
    let w_red = b.host("worker", "w-red", "red");
    let w_blue = b.host("worker", "w-blue", "blue");
    let w_green = b.host("worker", "w-green", "green");
    let c_red = b.host("client", "c-red", "red");
    let c_blue = b.host("client", "c-blue", "blue");
    let _workers = [
        b.worker(&w_red, "red-own"),
        b.worker(&w_blue, "blue-private"),
        b.worker(&w_blue, "blue-shared"),
        b.worker(&w_green, "green-public"),
    ];
    wait_service_up(ep, "blue-private", b.client(&c_blue));
    for service in ["red-own", "blue-shared", "green-public"] {
        wait_service_up(ep, service, b.client(&c_red));
    }

    let mut red = Client::connect(ep, b.client(&c_red)).expect("client");
    let table = [
        ("red-own", 0),
        ("blue-private", STATUS_FORBIDDEN),
        ("blue-shared", 0),
        ("green-public", 0),
    ];
    for (service, status) in table {
        let reply = red
            .request(service, "", b"from red", T, |_| {})
            .expect(service);
        assert_eq!(reply.status, status, "{service}: {reply:?}");
        let expected: &[u8] = match status {
            0 => b"from red",
            _ => b"service not visible to team red",
        };
        assert_eq!(reply.body, vec![expected.to_vec()], "{service}");
    }
    assert_eq!(mmi(&mut red, "blue-private"), b"404");
    assert_eq!(mmi(&mut red, "blue-shared"), b"200");
    let mut blue = Client::connect(ep, b.client(&c_blue)).expect("client");
    assert_eq!(mmi(&mut blue, "blue-private"), b"200");
    assert_eq!(mmi(&mut blue, "red-own"), b"404");

    // A red worker (a plain pyzmq MDP worker with its CURVE keys) registering blue's service.
    let env = b.py_env(&w_red);
    let mut rogue = python_peer(&["worker2", ep, "blue-private", "100"], &env_refs(&env));
    assert_eq!(rogue.line(T).as_deref(), Some("DISCONNECT"));
    assert_eq!(rogue.wait(T), Some(3));
    for _ in 0..4 {
        let reply = blue
            .request("blue-private", "", b"for blue only", T, |_| {})
            .expect("served");
        assert_eq!(
            reply.body,
            vec![b"for blue only".to_vec()],
            "by blue's worker"
        );
    }
    let log = b.broker.log();
    assert!(
        log.contains("refused READY: the service belongs to another team")
            && log.contains("worker/red/w-red"),
        "{log}"
    );
    assert!(
        log.contains("refused request: the service is not visible to the client's team"),
        "{log}"
    );

    let listing = b.broker.admin(&["service", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("json");
    let shared = parsed
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "blue-shared"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert_eq!(shared["team"], "blue");
    assert_eq!(shared["public"], false);
    assert_eq!(shared["shares"], serde_json::json!(["red"]));
    assert!(shared["workers"][0]
        .as_str()
        .is_some_and(|w| w.starts_with("w-blue (")));
    assert_eq!(shared["load"], 0);

    // A worker that holds its request shows as load (the broker records it once a second).
    let hang = python_peer(&["hang1", ep, "red-stuck", "100"], &env_refs(&env));
    wait_service_up(ep, "red-stuck", b.client(&c_red));
    red.send("red-stuck", "", None, Some(T), &[b"held"])
        .expect("send");
    assert_eq!(hang.line(T).as_deref(), Some("REQ held"));
    let loaded = poll(T, || {
        let listing = b.broker.admin(&["service", "list", "--json"]);
        let parsed: serde_json::Value = serde_json::from_str(&listing).ok()?;
        let stuck = parsed
            .as_array()?
            .iter()
            .find(|s| s["name"] == "red-stuck")?;
        (stuck["load"] == 1 && stuck["team"] == "red").then_some(())
    });
    assert!(loaded.is_some(), "{}", b.broker.admin(&["service", "list"]));
}

fn final_of(client: &mut Client) -> Reply {
    loop {
        match client.recv(T).expect("recv") {
            Some(Event::Final(reply)) => return reply,
            Some(Event::Partial { .. }) => continue,
            None => panic!("no reply"),
        }
    }
}

#[test]
fn two_clients_using_the_same_request_id_both_get_their_own_answer() {
    let b = curve_broker();
    let w = b.host("worker", "w1", "red");
    let (c1, c2) = (b.host("client", "c1", "red"), b.host("client", "c2", "red"));
    let worker = b.worker(&w, "echo");
    wait_service_up(&b.broker.endpoint, "echo", b.client(&c1));
    let mut one = Client::connect(&b.broker.endpoint, b.client(&c1)).expect("client");
    let mut two = Client::connect(&b.broker.endpoint, b.client(&c2)).expect("client");
    let id = 0x5eed;
    one.send("echo", "", Some(id), Some(T), &[b"from c1"])
        .expect("send");
    assert_eq!(final_of(&mut one).body, vec![b"from c1".to_vec()]);
    two.send("echo", "", Some(id), Some(T), &[b"from c2"])
        .expect("send");
    let reply = final_of(&mut two);
    assert_eq!((reply.id, reply.body), (id, vec![b"from c2".to_vec()]));
    // The same client repeating its id is still a duplicate: answered, the plugin not rerun.
    one.send("echo", "", Some(id), Some(T), &[b"from c1"])
        .expect("send");
    assert_eq!(final_of(&mut one).status, 0);
    let duplicates = &worker.stats.duplicates;
    assert_eq!(duplicates.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_store_from_before_teams_opens_and_its_tokens_work_under_plain() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let dir = tempfile::tempdir().expect("tempdir");
    let old = rusqlite::Connection::open(dir.path().join("store.db")).expect("sqlite");
    // The schema (and hash format) triggerd-broker wrote before teams and keys.
    old.execute_batch(
        "CREATE TABLE identities (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL);
         CREATE TABLE services (name TEXT PRIMARY KEY, algorithm TEXT NOT NULL, timeout_ms INTEGER);
         CREATE TABLE live_workers (
             worker TEXT PRIMARY KEY, service TEXT NOT NULL, identity TEXT NOT NULL);
         INSERT INTO services VALUES ('echo', 'serial', 5000);",
    )
    .expect("old schema");
    let mut tokens = Vec::new();
    for (name, role) in [("w1", "worker"), ("c1", "client")] {
        let token = format!("{name}-{}", "ab".repeat(30));
        let salt = SaltString::encode_b64(name.repeat(8).as_bytes()).expect("salt");
        // The old store's parameters: 8 MiB, one pass (a token has 256 bits of entropy).
        let params = argon2::Params::new(8 * 1024, 1, 1, None).expect("params");
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = argon2
            .hash_password(token.as_bytes(), &salt)
            .expect("hash")
            .to_string();
        old.execute(
            "INSERT INTO identities VALUES (?1, ?2, ?3)",
            [name, role, &hash],
        )
        .expect("identity");
        tokens.push(token);
    }
    drop(old);
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        "security = \"plain\"\nheartbeat = \"100ms\"",
    );
    let broker = Broker::start(dir.path());
    let mut options = fast_worker(&broker.endpoint, "echo");
    options.credentials = plain("w1", &tokens[0]);
    let _worker = WorkerThread::start(triggerd_remote::Worker::new(options));
    wait_service_up(&broker.endpoint, "echo", creds("c1", &tokens[1]));
    works(&broker.endpoint, creds("c1", &tokens[1]));
    let mut wrong = Client::connect(&broker.endpoint, creds("c1", &tokens[0])).expect("client");
    assert!(wrong
        .request("echo", "", b"x", Duration::from_millis(500), |_| {})
        .is_err());

    let identities = broker.admin(&["identity", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&identities).expect("json");
    assert_eq!(parsed[0]["name"], "c1");
    assert_eq!(parsed[0]["team"], "default", "{identities}");
    let listing = broker.admin(&["service", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("json");
    assert_eq!(parsed[0]["algorithm"], "serial", "settings kept: {listing}");
    assert_eq!(parsed[0]["timeout"], 5000);
    assert_eq!(parsed[0]["team"], "default", "claimed by w1's team");
}
