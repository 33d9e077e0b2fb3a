//! Back-pressure, message sizes, sleeping and shutdown: a full lane gives WouldBlock (counted,
//! nothing dropped), `publish_timeout` waits for space, 64 KiB messages pass, a sleeping consumer
//! is woken by a publish and stopped promptly by its stopper, one channel has one consumer, and
//! publishing into a channel the daemon removed fails instead of vanishing.

mod common;

use common::Consumer;
use std::sync::Arc;
use std::time::Duration;
use triggerd_ipc::{Channel, ChannelSpec, IpcError, PublishError, Publisher};

const LONG: Duration = Duration::from_secs(30);

fn small_spec(name: &str) -> ChannelSpec {
    ChannelSpec {
        lanes: 1,
        capacity_bytes: 256 << 10,
        ..ChannelSpec::new(name)
    }
}

#[test]
fn full_lane_gives_would_block_and_loses_nothing() {
    let name = common::unique("full");
    let channel = Arc::new(Channel::create(&small_spec(&name)).unwrap());
    let publisher = Publisher::connect(&name).unwrap();
    let message = |i: u32| {
        let mut m = i.to_le_bytes().to_vec();
        m.resize(1000, i as u8);
        m
    };
    let mut sent = 0u32;
    loop {
        match publisher.publish(&message(sent)) {
            Ok(()) => sent += 1,
            Err(PublishError::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 10_000, "lane never filled");
    }
    assert!(
        sent > 200,
        "a 256 KiB lane holds more than {sent} KiB messages"
    );
    assert_eq!(
        publisher.publish_timeout(&message(sent), Duration::from_millis(20)),
        Err(PublishError::WouldBlock)
    );
    assert_eq!(
        publisher.publish_batch(&[&message(sent)]),
        Err(PublishError::WouldBlock)
    );
    assert_eq!(channel.stats().full_ring_waits, 3);

    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let _consumer = Consumer::run(Arc::clone(&channel), move |m| {
        sink.lock().unwrap().push(m.to_vec())
    });
    publisher
        .publish_timeout(&message(sent), LONG)
        .expect("space once the consumer drains");
    sent += 1;
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() == sent as usize));
    let got = got.lock().unwrap();
    assert!(
        got.iter().enumerate().all(|(i, m)| *m == message(i as u32)),
        "lost or reordered"
    );
}

#[test]
fn large_messages_pass_and_oversized_ones_are_refused() {
    let name = common::unique("large");
    let (_consumer, got) = Consumer::collecting(&small_spec(&name));
    let publisher = Publisher::connect(&name).unwrap();
    assert!(publisher.max_message() >= triggerd_ipc::MIN_MAX_MESSAGE);
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..5 {
        publisher.publish_timeout(&big, LONG).unwrap(); // wraps the 256 KiB lane with padding
    }
    // The batch below must meet a drained lane: only the oversized message may stop it.
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() == 5));
    let too_big = vec![0u8; publisher.max_message() + 1];
    assert!(matches!(
        publisher.publish(&too_big),
        Err(PublishError::TooLarge { .. })
    ));
    assert_eq!(
        publisher.publish_batch(&[b"a", &too_big, b"b"]),
        Ok(1),
        "batch stops before the oversized one"
    );
    publisher.publish(b"").unwrap();
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() == 7));
    let got = got.lock().unwrap();
    assert!(got[..5].iter().all(|m| *m == big));
    assert_eq!(got[5..], [b"a".to_vec(), Vec::new()]);
}

#[test]
fn sleeping_consumer_is_woken_by_a_publish_and_stopped_promptly() {
    let name = common::unique("sleep");
    let (mut consumer, got) = Consumer::collecting(&small_spec(&name));
    assert!(common::wait_until(LONG, || {
        let s = consumer.stats();
        s.asleep && s.sleeps > 0
    }));
    Publisher::connect(&name)
        .unwrap()
        .publish(b"wake up")
        .unwrap();
    assert!(common::wait_until(LONG, || got.lock().unwrap().len() == 1));
    assert!(common::wait_until(LONG, || consumer.stats().asleep));
    assert!(
        consumer.stats().sleeps_via_io_uring,
        "kernel >= 6.7 should wait through io_uring"
    );
    let ended = consumer
        .stop(Duration::from_secs(5))
        .expect("run did not return after stop");
    assert!(ended.is_ok(), "{ended:?}");
}

#[test]
fn one_consumer_per_channel_and_lanes_run_out_cleanly() {
    let name = common::unique("single");
    let spec = ChannelSpec {
        lanes: 2,
        capacity_bytes: 512 << 10,
        ..ChannelSpec::new(name.as_str())
    };
    let (consumer, _got) = Consumer::collecting(&spec);
    assert!(common::wait_until(LONG, || consumer.stats().asleep));
    assert!(matches!(
        consumer.channel.run(|_| {}),
        Err(IpcError::AlreadyRunning { .. })
    ));
    let first = Publisher::connect(&name).unwrap();
    let second = Publisher::connect(&name).unwrap();
    assert!(matches!(
        Publisher::connect(&name),
        Err(IpcError::NoFreeLane { lanes: 2, .. })
    ));
    drop(second);
    let third = Publisher::connect(&name).expect("a dropped publisher frees its lane");
    drop((first, third));
    assert!(matches!(
        Channel::create(&ChannelSpec {
            capacity_bytes: 1000,
            ..ChannelSpec::new("tiny")
        }),
        Err(IpcError::InvalidSpec { .. })
    ));
    assert!(matches!(
        Publisher::connect("bad/name"),
        Err(IpcError::InvalidName { .. })
    ));
}

#[test]
fn publishing_into_a_removed_channel_fails_with_closed() {
    let name = common::unique("closed");
    let channel = Channel::create(&small_spec(&name)).unwrap();
    let publisher = Publisher::connect(&name).unwrap();
    publisher.publish(b"before").unwrap();
    // Fill the lane, then wait for room in another thread while the daemon removes the channel:
    // the waiter is woken and told the channel is closed.
    while publisher.publish(&[0u8; 1000]).is_ok() {}
    while publisher.publish(b"").is_ok() {}
    let waiter = std::thread::spawn(move || {
        let result = publisher.publish_timeout(b"waiting", Duration::from_secs(600));
        (result, publisher)
    });
    assert!(common::wait_until(LONG, || channel.stats().full_ring_waits > 2));
    drop(channel);
    let (result, publisher) = waiter.join().unwrap();
    assert_eq!(result, Err(PublishError::Closed));
    assert_eq!(publisher.publish(b"after"), Err(PublishError::Closed));
    assert!(matches!(
        Publisher::connect(&name),
        Err(IpcError::NoSuchChannel { .. })
    ));
}
