//! Delivery policies owned by the core: a failing action retried with back-off then handed to
//! its dead letter; a slow rule (even one whose full queue blocks) beside a fast one on the
//! same source; `rate` spreading a burst; a bounded queue dropping or coalescing when full.

use std::fs;

use crate::common::{wait_for, DEADLINE};
use crate::stamp::{self, ctl_ok, fire_all, runs, wait_runs};

/// A timer that never comes due during a test: its rule is driven by `fire`.
const YEARLY: &str = "cron = \"0 0 1 1 *\"";

/// Waits while `{dir}/gate` exists, then runs the next two arguments (a program and its one
/// argument) with the same stdin. (`$@` would be a facron token, hence the fixed arity.)
const GATED: &str = "\"/bin/sh\", \"-c\", \"while [ -e \\\"$0\\\" ]; do sleep 0.05; done; exec \\\"$1\\\" \\\"$2\\\"\", \"{dir}/gate\"";

#[test]
fn failing_action_is_retried_with_back_off_then_dead_lettered() {
    let mut daemon = stamp::start(&format!(
        "[[timer]]\nname = \"flaky\"\n{YEARLY}\nretry = {{ attempts = 3, backoff = \"50ms\", jitter = false }}\n\
         dead_letter = [\"{{stamp}}\", \"{{out}}/dead\"]\n\
         exec = [\"/bin/sh\", \"-c\", \"date +%s.%N >> \\\"$0\\\"; exec /bin/false\", \"{{out}}/attempts\"]\n\n\
         [[timer]]\nname = \"false\"\n{YEARLY}\nretry = {{ attempts = 3, backoff = \"50ms\" }}\n\
         dead_letter = [\"{{stamp}}\", \"{{out}}/dead-false\"]\nexec = [\"/bin/false\"]\n"
    ));
    ctl_ok(&daemon, &["fire", "flaky", "order 42"]);
    ctl_ok(&daemon, &["fire", "false", "order 43"]);
    let dead = wait_runs(&daemon.out().join("dead"), 1);
    let dead_false = wait_runs(&daemon.out().join("dead-false"), 1);
    for (name, dead, payload) in [
        ("flaky", &dead, "order 42"),
        ("false", &dead_false, "order 43"),
    ] {
        let r = wait_for("the rule to settle", DEADLINE, || {
            let r = daemon.rule(name);
            (r.dead_lettered == 1 && r.running == 0).then_some(r)
        });
        assert_eq!(
            (r.fired, r.failed, r.retried, r.dead_lettered),
            (3, 3, 2, 1),
            "{r:?}"
        );
        // The dead letter gets the original event: its payload on stdin.
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, payload.as_bytes(), "{dead:?}");
        assert_eq!(dead[0].rule, format!("{name}.dead_letter"));
    }
    let attempts: Vec<f64> = fs::read_to_string(daemon.out().join("attempts"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    // Back-off doubles: at least 50 ms before the second run, 100 ms before the third.
    assert!(attempts[1] - attempts[0] >= 0.045, "{attempts:?}");
    assert!(attempts[2] - attempts[1] >= 0.095, "{attempts:?}");
    assert_eq!(runs(&daemon.out().join("dead")).len(), 1);
}

#[test]
fn slow_rule_does_not_delay_a_fast_rule_on_the_same_source() {
    // `slow` holds its only slot until the gate goes, queues one tick, and then its full queue
    // says `block`: the timer source must still serve `fast` on time.
    let mut daemon = stamp::create(&format!(
        "[[timer]]\nname = \"slow\"\nevery = \"1s\"\nmax_running = 1\nqueue = 1\nwhen_full = \"block\"\n\
         exec = [{GATED}, \"/bin/true\"]\n\n\
         [[timer]]\nname = \"fast\"\nevery = \"1s\"\nexec = [\"{{stamp}}\", \"{{out}}\"]\n"
    ));
    fs::write(daemon.path("gate"), "").unwrap();
    daemon.launch();
    wait_for("slow to be blocked", DEADLINE, || {
        let r = daemon.rule("slow");
        (r.running == 1 && r.queued == 1 && r.matched >= 3).then_some(())
    });
    let fast_before = daemon.rule("fast").fired;
    wait_for("fast to keep firing", DEADLINE, || {
        (daemon.rule("fast").fired >= fast_before + 3).then_some(())
    });
    assert_eq!(
        daemon.rule("slow").fired,
        1,
        "slow is still on its first run"
    );
    // Each of fast's runs was for its own second: none was held back and bunched up.
    let fast = runs(&daemon.out());
    let mut scheduled: Vec<i64> = fast.iter().map(|r| r.scheduled() as i64).collect();
    scheduled.dedup();
    assert_eq!(scheduled.len(), fast.len(), "{fast:?}");

    fs::remove_file(daemon.path("gate")).unwrap();
    wait_for("slow to catch up", DEADLINE, || {
        let r = daemon.rule("slow");
        (r.fired >= 3 && r.failed == 0).then_some(())
    });
}

#[test]
fn rate_spreads_a_burst_over_time() {
    let mut daemon = stamp::start(&format!(
        "[[timer]]\nname = \"limited\"\n{YEARLY}\nrate = \"5/s\"\nexec = [\"{{stamp}}\", \"{{out}}\"]\n"
    ));
    let payloads: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    fire_all(&daemon, "limited", &payloads);
    let done = wait_for("ten runs", DEADLINE, || {
        let r = daemon.rule("limited");
        (r.fired == 10 && r.running == 0).then_some(r)
    });
    assert_eq!(done.dropped, 0, "{done:?}");
    let starts: Vec<f64> = wait_runs(&daemon.out(), 10)
        .iter()
        .map(|r| r.start)
        .collect();
    // A bucket of 5 refilled at 5/s: any k > 5 runs span at least (k - 5) / 5 s. The runs'
    // own start times are measured, so allow for a process that started late on a busy host.
    let slack = 0.25;
    for i in 0..starts.len() {
        for j in i + 5..starts.len() {
            let k = (j - i + 1) as f64;
            assert!(
                starts[j] - starts[i] >= (k - 5.0) / 5.0 - slack,
                "runs {i}..={j} too close: {starts:?}"
            );
        }
    }
    assert!(starts[9] - starts[0] >= 0.8, "{starts:?}");
}

#[test]
fn full_queue_drops_the_newest_or_coalesces() {
    let mut daemon = stamp::create(&format!(
        "[[timer]]\nname = \"bounded\"\n{YEARLY}\nmax_running = 1\nqueue = 1\nwhen_full = \"drop_newest\"\n\
         exec = [{GATED}, \"{{stamp}}\", \"{{out}}/bounded\"]\n\n\
         [[timer]]\nname = \"merged\"\n{YEARLY}\nmax_running = 1\nqueue = 1\nwhen_full = \"coalesce\"\n\
         exec = [{GATED}, \"{{stamp}}\", \"{{out}}/merged\"]\n"
    ));
    fs::write(daemon.path("gate"), "").unwrap();
    daemon.launch();
    for rule in ["bounded", "merged"] {
        fire_all(&daemon, rule, &["1", "2", "3", "4", "5"]);
    }
    let bounded = daemon.rule("bounded");
    assert_eq!(
        (bounded.running, bounded.queued, bounded.dropped),
        (1, 1, 3),
        "{bounded:?}"
    );
    let merged = daemon.rule("merged");
    assert_eq!(
        (
            merged.running,
            merged.queued,
            merged.coalesced,
            merged.dropped
        ),
        (1, 1, 3, 0),
        "{merged:?}"
    );
    fs::remove_file(daemon.path("gate")).unwrap();
    for (rule, bodies) in [("bounded", ["1", "2"]), ("merged", ["1", "5"])] {
        let got = wait_runs(&daemon.out().join(rule), 2);
        let got: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert_eq!(got, bodies, "{rule}");
        let r = wait_for("the rule to be idle", DEADLINE, || {
            let r = daemon.rule(rule);
            (r.running == 0 && r.queued == 0).then_some(r)
        });
        assert_eq!(r.fired, 2, "{r:?}");
    }
}

#[test]
fn a_burst_wider_than_the_descriptor_table_loses_no_action() {
    let mut daemon = stamp::create(&format!(
        "[[timer]]\nname = \"wide\"\n{YEARLY}\nmax_running = 4096\nexec = [{GATED}, \"{{stamp}}\", \"{{out}}\"]\n"
    ));
    fs::write(daemon.path("gate"), "").unwrap();
    daemon.launch();
    // 200 descriptors: 300 actions holding ~4 each cannot all run at once.
    let limited = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(daemon.pid().to_string())
        .arg("--nofile=200:200")
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success());
    let payloads: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    fire_all(&daemon, "wide", &payloads);
    wait_for("all 300 to be admitted", DEADLINE, || {
        (daemon.rule("wide").fired == 300).then_some(())
    });
    fs::remove_file(daemon.path("gate")).unwrap();
    let done = wait_for("all 300 to finish", DEADLINE, || {
        let r = daemon.rule("wide");
        (r.running == 0).then_some(r)
    });
    assert_eq!(done.failed, 0, "{done:?}\n{}", daemon.log_text());
    let mut bodies: Vec<u32> = wait_runs(&daemon.out(), 300)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).parse().unwrap())
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..300).collect::<Vec<_>>());
}
