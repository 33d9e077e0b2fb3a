//! `[daemon] metrics`: a real daemon binds port 0, reports the address in its status, and a
//! scrape while a writer keeps a trigger file busy shows the rule's and the file's counters
//! moving with the runs (the same numbers `triggerctl status` shows). The broker's `metrics`
//! shows its workers and service queues while a sender's spool and deliveries move.

mod common;
#[allow(dead_code)]
#[path = "remote/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{wait_for, Daemon, DEADLINE};
use harness::{broker_table, central_log_host, fire, Broker};

const CONFIG: &str = "metrics = \"127.0.0.1:0\"\n\n[[trigger]]\nname = \"tick\"\nfile = \"tick\"\nsplit = \"line\"\nexec = [\"/bin/true\"]\n\n[[trigger]]\nname = \"idle \\\"quoted\\\"\"\nfile = \"idle\"\nexec = [\"/bin/true\"]\n";

fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: triggerd\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("reply");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    text
}

/// The value of the sample line that starts with `series ` (name and labels).
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_while_events_flow_shows_the_counters_moving() {
    let mut daemon = Daemon::start(CONFIG);
    let address = daemon
        .status()
        .metrics
        .expect("the bound address in the status");
    assert!(
        !address.ends_with(":0"),
        "the port the system chose: {address}"
    );

    let first = scrape(&address);
    let fired = r#"triggerd_rule_fired_total{rule="tick",kind="trigger"}"#;
    assert_eq!(sample(&first, fired), Some(0), "{first}");
    assert!(
        first.contains(r#"triggerd_rule_fired_total{rule="idle \"quoted\"",kind="trigger"} 0"#),
        "a quote in a rule name is escaped: {first}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (Arc::clone(&stop), daemon.path("fs/tick"));
        std::thread::spawn(move || {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if std::fs::write(&file, b"x\n").is_ok() {
                    writes += 1;
                }
            }
            writes
        })
    };
    let mut seen = Vec::new();
    wait_for("the counters to move across scrapes", DEADLINE, || {
        let text = scrape(&address);
        seen.push(sample(&text, fired).expect("the rule's sample"));
        (seen.windows(2).filter(|w| w[1] > w[0]).count() >= 3).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    assert!(
        seen.windows(2).all(|w| w[1] >= w[0]),
        "a counter never goes down: {seen:?}"
    );

    let status = wait_for("every write to run", DEADLINE, || {
        let status = daemon.status();
        let rule = status.rules.iter().find(|r| r.name == "tick")?;
        (rule.fired == writes && rule.running == 0).then_some(status)
    });
    let last = scrape(&address);
    assert_eq!(sample(&last, fired), Some(writes), "{last}");
    let file = &status.triggers["tick"];
    assert_eq!(
        sample(&last, r#"triggerd_trigger_writes_total{file="tick"}"#),
        Some(file.writes),
        "the file's counter is the status's: {last}"
    );
    assert_eq!(
        sample(
            &last,
            r#"triggerd_rule_running{rule="tick",kind="trigger"}"#
        ),
        Some(0)
    );
    assert!(sample(&last, "triggerd_metrics_scrapes_total").unwrap_or(0) >= 3);
}

#[test]
fn the_broker_and_a_sender_show_queues_spool_and_deliveries() {
    const N: u64 = 20;
    let broker = Broker::start_with_metrics();
    let broker_metrics = broker.metrics_address();
    let mut sender = Daemon::start(&format!(
        "metrics = \"127.0.0.1:0\"\n\n{}\n[[trigger]]\nname = \"ship\"\nfile = \"ship\"\nsend = \"central\"\n",
        broker_table(&broker, "")
    ));
    let address = sender
        .status()
        .metrics
        .expect("the sender's metrics address");
    for i in 0..N {
        fire(&sender, "ship", &format!("line {i}"));
    }
    // No worker yet: the events wait in the sender's spool and in the broker's queue.
    let queued = r#"triggerd_broker_service_queued{service="central"}"#;
    wait_for("requests queued at the broker", DEADLINE, || {
        (sample(&scrape(&broker_metrics), queued) > Some(0)).then_some(())
    });
    let waiting = scrape(&address);
    assert_eq!(sample(&waiting, "triggerd_spool_appended_total"), Some(N));
    assert!(
        sample(&waiting, "triggerd_spool_pending") > Some(0),
        "{waiting}"
    );
    assert_eq!(
        sample(&waiting, "triggerd_delivery_delivered_total"),
        Some(0)
    );

    let mut worker = central_log_host(&broker, "");
    let delivered = wait_for("every event delivered, seen by a scrape", DEADLINE, || {
        let text = scrape(&address);
        (sample(&text, "triggerd_delivery_delivered_total") == Some(N)).then_some(text)
    });
    assert_eq!(
        sample(&delivered, "triggerd_spool_pending"),
        Some(0),
        "{delivered}"
    );
    assert_eq!(worker.status().remote.services[0].served, N);
    let drained = wait_for("the broker's queue drained", DEADLINE, || {
        let text = scrape(&broker_metrics);
        (sample(&text, queued) == Some(0) || sample(&text, queued).is_none()).then_some(text)
    });
    assert_eq!(
        sample(&drained, "triggerd_broker_workers"),
        Some(1),
        "{drained}"
    );
    assert!(
        drained.contains("triggerd_broker_refused_total{kind="),
        "{drained}"
    );
    assert_eq!(worker.stop(), Some(0));
    assert_eq!(sender.stop(), Some(0));
}
