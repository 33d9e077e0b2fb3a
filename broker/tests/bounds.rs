//! What hostile broker peers can make the real `triggerd-broker` hold: service entries for
//! names nobody serves (pruned once their requests are gone), bytes of queued requests (per
//! connection and in total, refused with 75), and connections that never authenticate
//! (bounded per address and in total, closed after `handshake_timeout`). Each is read back
//! through the broker's `mmi.status`, and an honest client is served throughout.

mod common;

use std::io::Read;
use std::process::Command;

use common::*;
use triggerd_remote::ext::{STATUS_BUSY, STATUS_TIMEOUT};
use triggerd_remote::{Client, Event};

/// Resident memory the broker may reach in these tests: its working set (about 12 MiB)
/// plus the configured byte bounds and a few frames in flight.
const RSS_BUDGET_KIB: u64 = 40 * 1024;

/// A connection (authenticated before any flood) that reads the broker's counters.
fn watcher(s: &Setup) -> Client {
    let mut client = Client::connect(&s.broker.endpoint, creds("c1", &s.client_token)).expect("c");
    broker_status(&mut client);
    client
}

/// Receives `n` FINAL replies on `client`; returns their statuses.
fn finals(client: &mut Client, n: usize) -> Vec<i32> {
    let mut statuses = Vec::new();
    while statuses.len() < n {
        match client.recv(T).expect("recv") {
            Some(Event::Final(reply)) => statuses.push(reply.status),
            Some(Event::Partial { .. }) => {}
            None => panic!("only {} of {n} replies", statuses.len()),
        }
    }
    statuses
}

#[test]
fn services_nobody_serves_are_forgotten_once_their_requests_time_out() {
    let s = setup();
    let mut watch = watcher(&s);
    let mut client = Client::connect(&s.broker.endpoint, creds("c1", &s.client_token)).expect("c");
    let names: Vec<String> = (0..300)
        .map(|i| format!("{i:03}-{}", "n".repeat(200 + i % 52)))
        .collect();
    for name in &names {
        let timeout = Some(std::time::Duration::from_millis(300));
        client.send(name, "", None, timeout, &[b"x"]).expect("send");
    }
    let statuses = finals(&mut client, names.len());
    assert!(
        statuses.iter().all(|&st| st == STATUS_TIMEOUT),
        "{statuses:?}"
    );
    // What is left is `echo` with its worker (absent for a moment if it missed heartbeats).
    let settled = poll(T, || {
        let now = broker_status(&mut watch);
        let services = now["services"].as_u64()?;
        (services <= 1 && now["requests"] == 0 && now["queued_bytes"] == 0).then_some(now)
    });
    let now = broker_status(&mut watch);
    assert!(settled.is_some(), "services not pruned: {now}");
    assert_eq!(now["refused"]["timed_out"], 300, "{now}");
    let rss = rss_kib(s.broker.process.child.id());
    assert!(rss < RSS_BUDGET_KIB, "broker RSS {rss} KiB");
    works(&s.broker.endpoint, creds("c1", &s.client_token));
}

#[test]
fn queued_request_bytes_are_bounded_per_connection_and_in_total() {
    // 1 MiB per connection, 2 MiB in all: three flooding connections meet both bounds.
    let s = setup_with("client_queue_bytes = 1048576\nqueue_bytes = 2097152", None);
    let mut watch = watcher(&s);
    let ep = s.broker.endpoint.clone();
    let body = vec![b'z'; 64 * 1024];
    let per_client = 400;
    let mut floods: Vec<Client> = (0..3)
        .map(|_| Client::connect(&ep, creds("c1", &s.client_token)).expect("client"))
        .collect();
    for flood in &mut floods {
        for _ in 0..per_client {
            let timeout = Some(T * 3);
            flood
                .send("nobody-serves-this", "", None, timeout, &[&body])
                .expect("send");
        }
    }
    // Every refusal is answered at once; the queued ones wait for their deadline.
    let refused = poll(T * 2, || {
        let now = broker_status(&mut watch);
        let sum =
            now["refused"]["client_bytes"].as_u64()? + now["refused"]["total_bytes"].as_u64()?;
        (sum + now["requests"].as_u64()? == 3 * per_client).then_some(now)
    });
    let now = broker_status(&mut watch);
    assert!(refused.is_some(), "not every request accounted for: {now}");
    assert!(
        now["queued_bytes"].as_u64().expect("bytes") <= 2 * 1024 * 1024,
        "{now}"
    );
    assert!(now["refused"]["client_bytes"].as_u64() > Some(0), "{now}");
    assert!(now["refused"]["total_bytes"].as_u64() > Some(0), "{now}");
    let rss = rss_kib(s.broker.process.child.id());
    eprintln!(
        "broker RSS after {} flooding requests: {rss} KiB",
        3 * per_client
    );
    assert!(rss < RSS_BUDGET_KIB, "broker RSS {rss} KiB");
    let first = finals(&mut floods[0], 20);
    assert!(
        first.contains(&STATUS_BUSY),
        "no refusal with 75: {first:?}"
    );
    let mut honest = Client::connect(&ep, creds("c1", &s.client_token)).expect("client");
    let reply = honest.request("echo", "", b"still here", T, |_| {});
    assert!(
        reply.is_ok(),
        "{reply:?}\n{}\n{}",
        broker_status(&mut watch),
        s.broker.log()
    );
    let log = s.broker.log();
    let lines = log.matches("queued bytes are at").count();
    assert!(
        lines <= 4,
        "refusals not rate-limited: {lines} lines\n{log}"
    );
}

/// Starts tests/py/flood_connect.py against `endpoint` from `source`.
fn flood(endpoint: &str, source: &str, count: usize) -> ChildGuard {
    let address = endpoint.trim_start_matches("tcp://");
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/flood_connect.py");
    let mut command = Command::new(PYTHON);
    command.args([script, host, port, source, &count.to_string()]);
    let guard = ChildGuard::spawn(command);
    let held = guard.line(T).unwrap_or_default();
    assert!(held.starts_with("HELD"), "flood did not start: {held}");
    guard
}

#[test]
fn unauthenticated_connections_do_not_lock_out_an_honest_client() {
    // The broker may hold 200 fds; the flood opens 400 connections from 127.0.0.2 and
    // reopens every one the broker closes. Their handshakes never end on their own.
    let limit = ["prlimit", "--nofile=200:200"];
    let s = setup_with(
        "max_handshakes = 64\nhandshakes_per_address = 16\nhandshake_timeout = \"60s\"",
        Some(&limit),
    );
    let mut watch = watcher(&s);
    let _flood = flood(&s.broker.endpoint, "127.0.0.2", 400);
    let counted = poll(T, || {
        let now = broker_status(&mut watch);
        (now["refused"]["handshakes"].as_u64()? > 0).then_some(())
    });
    assert!(
        counted.is_some(),
        "{}\n{}",
        broker_status(&mut watch),
        s.broker.log()
    );
    works(&s.broker.endpoint, creds("c1", &s.client_token));
    let alive = s.broker.process.child.id();
    assert!(rss_kib(alive) < RSS_BUDGET_KIB);
}

#[test]
fn a_connection_that_never_authenticates_is_closed_after_the_handshake_timeout() {
    let s = setup_with("handshake_timeout = \"5s\"", None);
    let mut watch = watcher(&s);
    let address = s.broker.endpoint.trim_start_matches("tcp://").to_string();
    let mut silent = std::net::TcpStream::connect(&address).expect("connect");
    silent.set_read_timeout(Some(T)).expect("timeout");
    let mut buf = [0u8; 256];
    // The broker sends its ZMTP greeting, then closes: read until end of stream.
    let closed = loop {
        match silent.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "the broker kept a silent connection past its handshake timeout"
    );
    // The broker learns of the timeout through its socket monitor, whose event may come after
    // the close this side saw.
    let counted = poll(T, || {
        let now = broker_status(&mut watch);
        (now["refused"]["handshake"].as_u64() > Some(0)).then_some(now)
    });
    assert!(counted.is_some(), "{}", broker_status(&mut watch));
    works(&s.broker.endpoint, creds("c1", &s.client_token));
}
