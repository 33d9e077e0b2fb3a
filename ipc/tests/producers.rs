//! Many publisher processes into one channel: every message arrives exactly once and each
//! producer's order is kept, with batched and unbatched publishers mixed.

mod common;

use common::{parse_message, ChildProc, Consumer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use triggerd_ipc::ChannelSpec;

#[test]
fn child_entry() {
    common::child_entry()
}

const PRODUCERS: u32 = 4;
const PER_PRODUCER: u64 = 1_000_000;

#[derive(Default)]
struct Tally {
    next: Vec<u64>,
    total: u64,
    errors: Vec<String>,
}

#[test]
fn four_processes_a_million_messages_each_arrive_once_in_order() {
    let name = common::unique("load");
    let spec = ChannelSpec {
        capacity_bytes: 4 << 20,
        lanes: 8,
        ..ChannelSpec::new(name.as_str())
    };
    let tally = Arc::new(Mutex::new(Tally {
        next: vec![0; PRODUCERS as usize],
        ..Tally::default()
    }));
    let sink = Arc::clone(&tally);
    let mut consumer = Consumer::start(&spec, move |m| {
        let mut t = sink.lock().unwrap();
        t.total += 1;
        match parse_message(m) {
            Some((id, seq)) if (id as usize) < t.next.len() && t.next[id as usize] == seq => {
                t.next[id as usize] += 1
            }
            other => {
                if t.errors.len() < 10 {
                    let expected = t.next.clone();
                    t.errors
                        .push(format!("got {other:?}, expected one of {expected:?}"));
                }
            }
        }
    });
    // Producers 0 and 1 publish in batches of 64, 2 and 3 one message per call; sizes differ.
    let mut children: Vec<ChildProc> = (0..PRODUCERS)
        .map(|id| {
            let (size, batch) = if id < 2 {
                (16, 64)
            } else {
                (24 + id as usize * 8, 1)
            };
            let args = [
                name.clone(),
                id.to_string(),
                PER_PRODUCER.to_string(),
                size.to_string(),
                batch.to_string(),
            ];
            ChildProc::spawn("produce", &args)
        })
        .collect();
    for child in &mut children {
        assert!(
            child.wait_success(Duration::from_secs(300)),
            "a producer failed"
        );
    }
    let expected = u64::from(PRODUCERS) * PER_PRODUCER;
    let all_in = common::wait_until(Duration::from_secs(60), || {
        tally.lock().unwrap().total >= expected
    });
    assert_eq!(
        consumer.stop(Duration::from_secs(10)).map(|r| r.is_ok()),
        Some(true)
    );
    let t = tally.lock().unwrap();
    assert!(
        t.errors.is_empty(),
        "out of order or corrupt: {:?}",
        t.errors
    );
    assert!(all_in, "only {} of {expected} messages arrived", t.total);
    assert_eq!(t.total, expected, "duplicates");
    assert_eq!(t.next, vec![PER_PRODUCER; PRODUCERS as usize]);
    let stats = consumer.stats();
    assert_eq!(stats.messages, expected);
    assert_eq!(stats.quarantines, 0);
}
