//! Any NATS client can use the documented subjects and headers: a `nats-py` client calls a
//! service a triggerd worker serves, and a `nats-py` worker serves a service that
//! `triggerctl send` reaches (output line streamed, then the final status).

use super::common::{test_root, Daemon};
use super::harness::{wait_serving, Ctl};
use super::hosts::nats_table;
use triggerd_nats::testing::Nats;

const CLIENT: &str = r#"
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    js = nc.jetstream()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await js.publish("triggerd.svc.job", b"from python", headers={
        "Nats-Msg-Id": "py-1", "Triggerd-Reply": inbox, "Triggerd-Plugin": "echo"})
    while True:
        msg = await sub.next_msg(timeout=20)
        kind = msg.headers.get("Triggerd-Kind")
        if kind == "final":
            print("final", msg.headers.get("Triggerd-Status"), msg.data.decode(), flush=True)
            break
        print("partial", msg.data.decode(), flush=True)
    await nc.close()
asyncio.run(main())
"#;

const WORKER: &str = r#"
import asyncio, sys, nats
from nats.js.api import StreamConfig, RetentionPolicy, ConsumerConfig, AckPolicy
async def main():
    nc = await nats.connect(sys.argv[1])
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="triggerd-svc-pyjob", subjects=["triggerd.svc.pyjob"],
        retention=RetentionPolicy.WORK_QUEUE, description="triggerd algorithm=roundrobin"))
    sub = await js.pull_subscribe("triggerd.svc.pyjob", durable="workers")
    print("ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            reply = msg.headers.get("Triggerd-Reply")
            head = {"Triggerd-Id": msg.headers.get("Nats-Msg-Id", ""), "Triggerd-Worker": "py"}
            await nc.publish(reply, b"python got " + msg.data,
                headers={**head, "Triggerd-Kind": "partial"})
            await nc.publish(reply, b"", headers={**head, "Triggerd-Kind": "final",
                "Triggerd-Status": "4"})
            await msg.ack()
asyncio.run(main())
"#;

fn python(script: &str, endpoint: &str) -> Ctl {
    Ctl::spawn_program("python3", &["-c", script, endpoint])
}

#[test]
fn a_nats_py_client_calls_a_triggerd_service() {
    let nats = Nats::single(&test_root());
    let mut worker = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"job\"\nplugin = \"echo\"\n",
        nats_table(&nats, "")
    ));
    wait_serving(&mut worker, "job");
    let mut client = python(CLIENT, &nats.nodes[0].client);
    assert_eq!(client.line(), "final 0 from python");
    assert_eq!(client.exit_code(), Some(0));
}

#[test]
fn triggerctl_send_reaches_a_nats_py_worker() {
    let nats = Nats::single(&test_root());
    let worker = python(WORKER, &nats.nodes[0].client);
    assert_eq!(worker.line(), "ready");
    let endpoint = nats.endpoint();
    let mut ctl = Ctl::spawn(&["send", "--broker", &endpoint, "pyjob", "hi"]);
    assert_eq!(ctl.line(), "python got hi");
    assert_eq!(ctl.exit_code(), Some(4));
    drop(worker);
}

const GARBAGE: &str = r#"
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    js = nc.jetstream()
    await js.publish("triggerd.svc.job", b"no headers at all")
    await js.publish("triggerd.svc.job", b"odd", headers={"Triggerd-Timeout-Ms": "soon",
        "Triggerd-Plugin": "../../bin/sh", "Triggerd-Reply": "not a subject", "Nats-Msg-Id": "x" * 32})
    await js.publish("triggerd.svc.job", b"\x00\xff" * 1000, headers={"Triggerd-Reply": ">"})
    try:
        await js.publish("triggerd.svc.job", b"x" * (2 * 1024 * 1024))
        print("oversized accepted", flush=True)
    except Exception:
        print("oversized refused", flush=True)
    await nc.close()
asyncio.run(main())
"#;

#[test]
fn garbage_from_any_nats_client_does_not_stop_a_worker() {
    let nats = Nats::single(&test_root());
    let mut worker = Daemon::start(&format!(
        "{}\n[[service]]\nname = \"job\"\nplugin = \"echo\"\n",
        nats_table(&nats, "")
    ));
    wait_serving(&mut worker, "job");
    let mut garbage = python(GARBAGE, &nats.nodes[0].client);
    assert_eq!(garbage.line(), "oversized refused");
    assert_eq!(garbage.exit_code(), Some(0));
    let endpoint = nats.endpoint();
    let mut echo = Ctl::spawn(&["send", "--broker", &endpoint, "job", "still here"]);
    assert_eq!(echo.line(), "still here");
    assert_eq!(echo.exit_code(), Some(0));
    worker.assert_alive();
    // A reply subject the server refuses would cost the worker its connection, and its
    // unacknowledged requests would run again and again. Served: the one without headers,
    // the binary one and the echo (the `../../bin/sh` plugin does not exist).
    let served = &super::harness::remote_status(&mut worker).services[0];
    let counts = (served.served, served.duplicates, served.dead_letters);
    assert_eq!(counts, (3, 0, 0), "{served:?}");
}
