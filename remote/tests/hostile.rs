//! Hostile broker peers against the real `triggerd-broker`: a client claiming the routing ids
//! libzmq hands to anonymous peers (which made an unpatched ROUTER assert and abort the broker)
//! and the broker still serves honest clients afterwards.

mod common;

use std::process::Command;

use common::*;

/// The hostile peer from tests/py/claim_ids.py.
fn claim_ids(endpoint: &str, anonymous: usize, user: &str, token: &str) -> ChildGuard {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/claim_ids.py");
    let mut command = Command::new(PYTHON);
    command
        .arg(script)
        .arg(endpoint)
        .arg(anonymous.to_string())
        .env("MDP_USER", user)
        .env("MDP_TOKEN", token);
    ChildGuard::spawn(command)
}

#[test]
fn a_client_claiming_generated_routing_ids_does_not_abort_the_broker() {
    let mut s = setup();
    let ep = s.broker.endpoint.clone();
    let mut hostile = claim_ids(&ep, 8, "c1", &s.client_token);
    let claimed = hostile.line(T * 6).unwrap_or_default();
    assert!(claimed.starts_with("CLAIMED"), "{claimed}\n{}", s.broker.log());
    let code = hostile.wait(T * 6);
    let alive = s.broker.process.child.try_wait().expect("status").is_none();
    assert!(alive, "broker died\n{}", s.broker.log());
    assert_eq!(code, Some(0), "anonymous requests unanswered");
    works(&ep, creds("c1", &s.client_token));
}
