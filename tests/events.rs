//! `triggerctl events` against a real daemon: a write into a trigger file shows as its event
//! and its run (outcome, duration) in the live stream, `--rule` filters, and a reader that
//! never reads neither blocks the events nor other readers: it is told what it missed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::{wait_for, Daemon, KillOnDrop, DEADLINE};
use triggerd::control::{Reply, Request};

const CONFIG: &str = "[[trigger]]\nname = \"hello\"\nfile = \"hello\"\nexec = [\"/bin/sh\", \"-c\", \"cat >/dev/null; exit 3\"]\n\n[[trigger]]\nname = \"flood\"\nfile = \"flood\"\nsplit = \"line\"\nexec = [\"/bin/true\"]\n";

/// `triggerctl events ARGS` with its stdout read line by line.
fn follow(daemon: &Daemon, args: &[&str]) -> (KillOnDrop, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("events")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("triggerctl events");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (KillOnDrop(child), out)
}

fn line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line)
        .expect("a line from triggerctl events");
    line
}

fn readers(daemon: &mut Daemon, n: u64) {
    wait_for(&format!("{n} event readers"), DEADLINE, || {
        (daemon.try_status()?.event_readers == n).then_some(())
    });
}

fn control(daemon: &Daemon, request: Request) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = runtime.block_on(triggerd::control::request(&daemon.socket, &request));
    assert!(matches!(reply, Ok(Reply::Done(_))), "{reply:?}");
}

#[test]
fn a_write_shows_as_its_event_and_its_run_and_a_stuck_reader_blocks_nothing() {
    const FLOOD: u64 = 20_000;
    let mut daemon = Daemon::start(CONFIG);
    let (_json, mut json_out) = follow(&daemon, &["--json", "--rule", "hello"]);
    readers(&mut daemon, 1);
    // A reader that asks for every record and never reads one.
    let mut stuck = UnixStream::connect(&daemon.socket).expect("connect");
    stuck.write_all(b"{\"verb\":\"events\"}\n").expect("ask");
    readers(&mut daemon, 2);

    control(
        &daemon,
        Request::Pause {
            rule: "flood".into(),
        },
    );
    let flood = daemon.path("fs/flood");
    let chunk = "x\n".repeat(1000);
    for _ in 0..FLOOD / 1000 {
        std::fs::write(&flood, &chunk).expect("write the flood");
    }
    wait_for("every flood event matched", DEADLINE, || {
        let status = daemon.try_status()?;
        let rule = status.rules.iter().find(|r| r.name == "flood")?;
        (rule.matched == FLOOD).then_some(())
    });

    std::fs::write(daemon.path("fs/hello"), "world\n").expect("write hello");
    let event: serde_json::Value = serde_json::from_str(&line(&mut json_out)).expect("json");
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["rule"], "hello");
    assert_eq!(event["source"], "trigger");
    assert_eq!(event["subject"], "hello");
    let run: serde_json::Value = serde_json::from_str(&line(&mut json_out)).expect("json");
    assert_eq!(run["type"], "run", "{run}");
    assert_eq!(
        (run["id"].clone(), run["outcome"].clone()),
        (event["id"].clone(), "exit 3".into())
    );
    assert_eq!(run["ok"], false);
    assert!(
        run["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{run}"
    );

    // The stuck reader, reading at last: its records, and how many it missed.
    let mut stuck = BufReader::new(stuck);
    let mut first = String::new();
    stuck.read_line(&mut first).expect("reply line");
    assert!(first.contains("done"), "{first}");
    let (mut got, mut missed) = (0u64, 0u64);
    while missed == 0 {
        let mut text = String::new();
        assert!(
            stuck.read_line(&mut text).expect("record") > 0,
            "the stream ended"
        );
        let record: serde_json::Value = serde_json::from_str(&text).expect("json record");
        match record["type"].as_str() {
            Some("dropped") => missed = record["count"].as_u64().expect("count"),
            Some("event") => got += 1,
            other => panic!("unexpected {other:?}: {text}"),
        }
    }
    assert!(got > 0 && got < FLOOD, "got {got} before the drop report");
    assert!(
        missed > 0 && got + missed <= FLOOD + 2,
        "got {got}, missed {missed}"
    );

    // People's format, cut to no width in a pipe.
    let (_human, mut human) = follow(&daemon, &["--rule", "hello", "--count", "2"]);
    readers(&mut daemon, 3);
    std::fs::write(daemon.path("fs/hello"), "again\n").expect("write hello");
    let event = line(&mut human);
    assert!(
        event.contains("  event  hello  #") && event.contains("trigger  \"hello\""),
        "{event}"
    );
    let run = line(&mut human);
    assert!(
        run.contains("  run    hello  #") && run.contains("exit 3  "),
        "{run}"
    );
}

#[test]
fn an_unknown_rule_and_readers_past_the_bound_are_refused() {
    let mut daemon = Daemon::start(CONFIG);
    let out = daemon.ctl(&["events", "--rule", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule named `nope`"));
    let max = triggerd::dispatch::feed::MAX_SUBSCRIBERS as u64;
    let held: Vec<UnixStream> = (0..max)
        .map(|_| {
            let mut s = UnixStream::connect(&daemon.socket).expect("connect");
            s.write_all(b"{\"verb\":\"events\"}\n").expect("ask");
            s
        })
        .collect();
    readers(&mut daemon, max);
    let out = daemon.ctl(&["events"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many event readers"));
    drop(held);
    readers(&mut daemon, 0);
}
