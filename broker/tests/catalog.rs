//! The trigger catalog at a real `triggerd-broker` process (PLAIN identities): the admin
//! verbs (`trigger add/mv/chmod/mkdir/remove/list`, `identity add --catalog-admin`) write the
//! store while the broker runs; a subscriber's snapshot holds what is there, and each change
//! reaches it as a PARTIAL update numbered after the last one (`prev`); `ping` answers the
//! subscriber's number; a change asked by a non-admin identity is refused with 77 and takes
//! no number, an admin's is applied and pushed; malformed requests get 65.

mod common;

use std::time::Duration;

use common::*;
use triggerd_remote::broker::{Pong, Snapshot, Update};
use triggerd_remote::ext::{STATUS_BAD_REQUEST, STATUS_FORBIDDEN};
use triggerd_remote::{Client, Event};

const SERVICE: &str = "mmi.catalog";

fn ask(client: &mut Client, frames: &[&[u8]]) -> (u128, i32, Vec<u8>) {
    let id = client
        .send(SERVICE, "", None, Some(T), frames)
        .expect("send");
    loop {
        match client.recv(T).expect("recv") {
            Some(Event::Final(r)) if r.id == id => {
                return (id, r.status, r.body.concat());
            }
            Some(_) => continue,
            None => panic!("no answer to {frames:?}"),
        }
    }
}

/// The next update pushed for subscription `id`.
fn update(client: &mut Client, id: u128) -> Update {
    loop {
        match client.recv(Duration::from_secs(5)).expect("recv") {
            Some(Event::Partial { id: got, body }) if got == id => {
                return serde_json::from_slice(&body[0]).expect("update json");
            }
            Some(_) => continue,
            None => panic!("no update within 5 s"),
        }
    }
}

#[test]
fn admin_verbs_reach_a_subscriber_as_numbered_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(dir.path(), "tcp://127.0.0.1:*", "auth = true");
    let host = admin(dir.path(), &["token", "add", "client", "host"])
        .trim()
        .to_string();
    let boss = admin(
        dir.path(),
        &["identity", "add", "client", "boss", "--catalog-admin"],
    )
    .trim()
    .to_string();
    admin(
        dir.path(),
        &[
            "trigger",
            "add",
            "weather/rpi/station1",
            "--team",
            "default",
            "--service",
            "demo",
            "--timeout",
            "10s",
            "--split",
            "line",
            "--mode",
            "0640",
        ],
    );
    let broker = Broker::start(dir.path());
    let mut sub = Client::connect(&broker.endpoint, creds("host", &host)).expect("client");
    let (id, status, body) = ask(&mut sub, &[b"snapshot"]);
    assert_eq!(status, 0);
    let snapshot: Snapshot = serde_json::from_slice(&body).expect("snapshot json");
    assert_eq!(snapshot.seq, 1);
    let e = &snapshot.entries[0];
    assert_eq!(
        (
            e.path.as_str(),
            e.service.as_str(),
            e.timeout_ms,
            e.split.as_str(),
            e.mode
        ),
        ("weather/rpi/station1", "demo", Some(10_000), "line", 0o640)
    );

    // An admin verb while the broker runs: pushed, numbered after the snapshot.
    admin(
        broker.dir.as_path(),
        &[
            "trigger",
            "mv",
            "weather/rpi",
            "weather/pi",
            "--team",
            "default",
        ],
    );
    let moved = update(&mut sub, id);
    assert_eq!((moved.prev, moved.seq), (1, 2));
    let mut paths: Vec<(String, bool)> = moved
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.deleted))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("weather/pi/station1".to_string(), false),
            ("weather/rpi/station1".to_string(), true)
        ]
    );
    let (_, status, body) = ask(&mut sub, &[b"ping"]);
    let pong: Pong = serde_json::from_slice(&body).expect("pong");
    assert_eq!((status, pong.seq), (0, 2));

    // A change from a host: refused for a non-admin, applied for an admin.
    let chmod = br#"{"op":"chmod","path":"weather/pi/station1","mode":384}"#;
    let (_, status, _) = ask(&mut sub, &[b"change", chmod]);
    assert_eq!(status, STATUS_FORBIDDEN);
    let mut boss = Client::connect(&broker.endpoint, creds("boss", &boss)).expect("client");
    let (_, status, _) = ask(&mut boss, &[b"change", chmod]);
    assert_eq!(status, 0);
    let changed = update(&mut sub, id);
    assert_eq!(
        (changed.prev, changed.seq),
        (2, 3),
        "the refusal took no number"
    );
    assert_eq!(changed.entries[0].mode, 0o600);

    // Hostile requests: unknown verb, malformed change.
    assert_eq!(ask(&mut boss, &[b"explode"]).1, STATUS_BAD_REQUEST);
    assert_eq!(
        ask(&mut boss, &[b"change", b"{not json"]).1,
        STATUS_BAD_REQUEST
    );
    let escape = br#"{"op":"mkdir","path":"../etc"}"#;
    assert_eq!(ask(&mut boss, &[b"change", escape]).1, STATUS_BAD_REQUEST);

    admin(
        broker.dir.as_path(),
        &["trigger", "mkdir", "empty/dir", "--team", "default"],
    );
    admin(
        broker.dir.as_path(),
        &["trigger", "remove", "weather", "--team", "default"],
    );
    let listed = admin(
        broker.dir.as_path(),
        &["trigger", "list", "--team", "default", "--json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("list json");
    assert_eq!(listed["seq"], 5);
    assert_eq!(listed["entries"][0]["path"], "empty/dir");
    assert_eq!(listed["entries"][0]["dir"], true);
    assert_eq!(listed["entries"].as_array().map(Vec::len), Some(1));
}
