//! A three-node JetStream cluster with the service's stream replicated three times: one node
//! is killed with SIGKILL while a daemon forwards 10,000 events, and started again; every
//! event is executed, none twice.

use super::common::test_root;
use super::hosts::{append_host, assert_once, fire_all, numbered, sender, set_service, wait_lines};
use triggerd_nats::testing::Nats;
use triggerd_nats::ServiceConfig;

#[test]
fn an_r3_stream_survives_a_killed_node_and_runs_10000_events_once() {
    let mut nats = Nats::cluster(&test_root(), 3);
    set_service(
        &nats,
        "central",
        ServiceConfig {
            replicas: 3,
            ..ServiceConfig::default()
        },
    );
    let worker = append_host(&nats, "central");
    let ship = sender(&nats, "central");
    let payloads = numbered(10_000, "r3");
    fire_all(&ship, payloads[..3000].to_vec());
    nats.kill(1);
    fire_all(&ship, payloads[3000..7000].to_vec());
    nats.restart(1);
    fire_all(&ship, payloads[7000..].to_vec());
    let all = wait_lines(&[worker.path("central.log")], 10_000, "10,000 lines");
    assert_once(&all, &payloads);
}
