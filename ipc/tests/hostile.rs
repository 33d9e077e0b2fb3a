//! The region is hostile ground: a fuzzing process scribbling over it (and killed mid-write)
//! quarantines only its own channel; crafted garbage lengths, sequences, tails and padding each
//! quarantine cleanly; a publisher killed mid-write wedges nothing and its lane is reused.

mod common;

use common::{parse_message, ChildProc, Consumer};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use triggerd_ipc::{Channel, ChannelSpec, IpcError, Publisher, Quarantine};

#[test]
fn child_entry() {
    common::child_entry()
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn fuzzing_producer_quarantines_its_channel_while_another_keeps_delivering() {
    let fuzzed = common::unique("fuzzed");
    let healthy = common::unique("healthy");
    let (mut victim, _) = Consumer::collecting(&ChannelSpec::new(fuzzed.as_str()));
    let (mut other, got) = Consumer::collecting(&ChannelSpec::new(healthy.as_str()));

    let mut fuzzer = ChildProc::spawn("fuzz", std::slice::from_ref(&fuzzed));
    assert!(
        fuzzer.line("mapped", LONG).is_some(),
        "fuzzer did not start"
    );
    let producer = ChildProc::spawn(
        "produce",
        &[
            healthy.clone(),
            "7".into(),
            "20000".into(),
            "64".into(),
            "8".into(),
        ],
    );

    let ended = victim
        .finished(LONG)
        .expect("fuzzed channel neither quarantined nor stopped");
    assert!(
        matches!(ended, Err(IpcError::Quarantined { .. })),
        "{ended:?}"
    );
    fuzzer.kill(); // SIGKILL while it is writing
    let stats = victim.stats();
    assert_eq!(stats.quarantines, 1);
    assert!(stats.quarantine.is_some());
    // A quarantined channel stays quarantined.
    assert!(matches!(
        victim.channel.run(|_| {}),
        Err(IpcError::Quarantined { .. })
    ));

    let mut producer = producer;
    assert!(producer.wait_success(LONG), "healthy producer failed");
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() == 20_000));
    let seqs: Vec<u64> = got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| parse_message(m))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(seqs, (0..20_000).collect::<Vec<_>>());
    Publisher::connect(&healthy)
        .unwrap()
        .publish(b"still here")
        .unwrap();
    assert!(common::wait_until(LONG, || got
        .lock()
        .unwrap()
        .last()
        .map(Vec::as_slice)
        == Some(b"still here")));
    assert_eq!(other.stop(LONG).map(|r| r.is_ok()), Some(true));
}

#[test]
fn publisher_killed_mid_write_wedges_nothing_and_its_lane_is_reused() {
    let name = common::unique("killed");
    let spec = ChannelSpec {
        lanes: 2,
        capacity_bytes: 2 << 20,
        ..ChannelSpec::new(name.as_str())
    };
    let (consumer, got) = Consumer::collecting(&spec);
    let mut victim = ChildProc::spawn("produce-forever", &[name.clone(), "3".into()]);
    assert!(victim.line("connected", LONG).is_some());
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() > 5_000));
    victim.kill(); // SIGKILL in the middle of its publish loop

    // Both lanes are usable again: the dead publisher's lane is taken over.
    let a = Publisher::connect(&name).expect("first lane");
    let b = Publisher::connect(&name).expect("the dead publisher's lane");
    a.publish(b"after-a").unwrap();
    b.publish(b"after-b").unwrap();
    assert!(common::wait_until(LONG, || {
        let got = got.lock().unwrap();
        got.iter().any(|m| m == b"after-a") && got.iter().any(|m| m == b"after-b")
    }));
    let got = got.lock().unwrap();
    let seqs: Vec<u64> = got
        .iter()
        .filter_map(|m| parse_message(m))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "gap or duplicate"
    );
    assert_eq!(consumer.stats().quarantines, 0);
}

/// Byte offsets of the layout (see the crate's `layout` module): lane headers from 4096, 512 B
/// each (tail at +64); data after the headers rounded to a page.
struct Crafted {
    file: std::fs::File,
    lane_data: u64,
}

impl Crafted {
    fn open(name: &str, lanes: u64) -> Self {
        let file = std::fs::File::from(triggerd_ipc::receive_memfd(name).unwrap());
        Self {
            file,
            lane_data: 4096 + (lanes * 512).next_multiple_of(4096),
        }
    }

    fn record(&self, pos: u64, len_word: u32, seq: u32) {
        let mut header = len_word.to_le_bytes().to_vec();
        header.extend_from_slice(&seq.to_le_bytes());
        self.file
            .write_all_at(&header, self.lane_data + pos)
            .unwrap();
    }

    fn publish_tail(&self, tail: u64) {
        self.file
            .write_all_at(&tail.to_le_bytes(), 4096 + 128)
            .unwrap();
    }
}

fn quarantine_of(craft: impl FnOnce(&Crafted)) -> Quarantine {
    let name = common::unique("crafted");
    let spec = ChannelSpec {
        lanes: 1,
        capacity_bytes: 256 << 10,
        ..ChannelSpec::new(name.as_str())
    };
    let channel = Arc::new(Channel::create(&spec).unwrap());
    let publisher = Publisher::connect(&name).unwrap(); // marks lane 0 active
    publisher.publish(b"good").unwrap();
    craft(&Crafted::open(&name, 1));
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&delivered);
    let mut consumer = Consumer::run(channel, move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    match consumer.finished(LONG) {
        Some(Err(IpcError::Quarantined { reason, .. })) => {
            assert_eq!(consumer.stats().quarantines, 1);
            reason
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
}

#[test]
fn garbage_tail_quarantines() {
    let r = quarantine_of(|c| c.publish_tail(u64::MAX - 7));
    assert!(matches!(r, Quarantine::TailOutOfRange { .. }), "{r:?}");
    let r = quarantine_of(|c| c.publish_tail(16 + 3));
    assert!(matches!(r, Quarantine::TailOutOfRange { .. }), "{r:?}");
}

#[test]
fn garbage_sequence_quarantines() {
    let r = quarantine_of(|c| {
        c.record(16, 4, 0xdead_beef);
        c.publish_tail(32);
    });
    assert!(
        matches!(
            r,
            Quarantine::BadSequence {
                pos: 16,
                found: 0xdead_beef,
                expected: 2,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn garbage_lengths_quarantine() {
    for len in [u32::MAX >> 1, 200_000, 64] {
        let r = quarantine_of(|c| {
            c.record(16, len, 2);
            c.publish_tail(32);
        });
        assert!(
            matches!(r, Quarantine::BadLength { pos: 16, .. }),
            "{len}: {r:?}"
        );
    }
}

#[test]
fn garbage_padding_quarantines() {
    let r = quarantine_of(|c| {
        c.record(16, 0x8000_0000 | 8, 2);
        c.publish_tail(32);
    });
    assert!(matches!(r, Quarantine::BadPadding { pos: 16, .. }), "{r:?}");
}
