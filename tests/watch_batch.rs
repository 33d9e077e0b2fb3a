//! `batch` through a real daemon and real fanotify: 500 files dropped into a watched tree make
//! one or a few runs that together list exactly those 500 paths on stdin (`paths0`, names with
//! newlines and quotes included); a batch bound by `max_batch` is cut into several runs that
//! say so (`TRIGGERD_BATCH_OVERFLOW=1`) and lose nothing; `stdin = "json"` works for a single
//! event too.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use common::{paths0, saved_runs, Daemon, SAVE_STDIN};

fn json_paths(input: &[u8]) -> Vec<OsString> {
    let text = std::str::from_utf8(input).expect("json is text");
    text.lines()
        .map(|line| {
            let object: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            OsString::from(object["path"].as_str().expect("path"))
        })
        .collect()
}

#[test]
fn a_burst_of_500_files_is_listed_exactly_in_one_or_a_few_runs() {
    let mut daemon = Daemon::start("");
    for dir in ["tree", "tree/a", "tree/b", "single"] {
        fs::create_dir(daemon.path(dir)).unwrap();
    }
    let config = format!(
        "[[watch]]\nname = \"all\"\npath = \"{{dir}}/tree\"\nevents = [\"close_write\"]\n\
         recursive = true\nbatch = \"200ms\"\nstdin = \"paths0\"\n\
         exec = [\"/bin/sh\", \"-c\", {save:?}, \"{{out}}\", \"all\"]\n\n\
         [[watch]]\nname = \"cut\"\npath = \"{{dir}}/tree\"\nevents = [\"close_write\"]\n\
         recursive = true\nbatch = \"200ms\"\nmax_batch = 150\nstdin = \"json\"\n\
         exec = [\"/bin/sh\", \"-c\", {save:?}, \"{{out}}\", \"cut\"]\n\n\
         [[watch]]\nname = \"single\"\npath = \"{{dir}}/single\"\nevents = [\"close_write\"]\n\
         stdin = \"json\"\nexec = [\"/bin/sh\", \"-c\", {save:?}, \"{{out}}\", \"single\"]\n",
        save = SAVE_STDIN
    );
    daemon.write_config(&config);
    daemon.reload();
    daemon.wait_watching();

    let mut expected = BTreeSet::new();
    for i in 0..500 {
        let sub = if i % 2 == 0 { "a" } else { "b" };
        // Every tenth name holds a newline, every seventh a quote and a space.
        let mut name = format!("f{i}");
        if i % 10 == 0 {
            name.push_str("\nline two");
        }
        if i % 7 == 0 {
            name.push_str(" \"q\"");
        }
        let path = daemon.path(&format!("tree/{sub}/{name}"));
        fs::write(&path, "x").unwrap();
        expected.insert(path.into_os_string());
    }
    fs::write(daemon.path("single/one"), "x").unwrap();

    let out = daemon.out();
    let listed = |kind: &str, parse: fn(&[u8]) -> Vec<OsString>| -> Vec<OsString> {
        saved_runs(&out, kind)
            .iter()
            .flat_map(|(input, _)| parse(input))
            .collect()
    };
    common::wait_for("500 paths in the batched runs", common::DEADLINE, || {
        let done = listed("all", paths0).len() >= 500 && listed("cut", json_paths).len() >= 500;
        done.then_some(())
    });
    common::wait_for("every run to finish", common::DEADLINE, || {
        let status = daemon.status();
        status
            .rules
            .iter()
            .all(|r| r.running == 0 && r.queued == 0)
            .then_some(())
    });

    let all = listed("all", paths0);
    let runs = saved_runs(&out, "all");
    assert_eq!(all.len(), 500, "each path listed once");
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), expected);
    assert!(
        runs.len() <= 5,
        "500 files made {} runs, not one or a few",
        runs.len()
    );
    let rule = daemon.rule("all");
    assert_eq!(rule.fired as usize, runs.len());
    assert_eq!(rule.batch_cuts, 0);
    let counted: usize = runs
        .iter()
        .map(|(_, vars)| vars.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, 500, "TRIGGERD_BATCH_COUNT adds up");

    // max_batch = 150: at least four runs, the full ones marked as cut, nothing lost.
    let cut = listed("cut", json_paths);
    let cut_runs = saved_runs(&out, "cut");
    assert_eq!(cut.into_iter().collect::<BTreeSet<_>>(), expected);
    assert!(cut_runs.len() >= 4, "{} runs", cut_runs.len());
    let overflowed = cut_runs.iter().filter(|(_, v)| v == "150 1").count();
    let vars: Vec<&String> = cut_runs.iter().map(|r| &r.1).collect();
    assert!(overflowed >= 1, "cut runs: {vars:?}");
    assert!(cut_runs
        .iter()
        .all(|(input, _)| json_paths(input).len() <= 150));
    assert_eq!(daemon.rule("cut").batch_cuts as usize, overflowed);

    // A single event's JSON object names its path, kind and the writer's pid.
    let single = common::wait_for("the single run", common::DEADLINE, || {
        saved_runs(&out, "single").into_iter().next()
    });
    let object: serde_json::Value =
        serde_json::from_slice(single.0.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(
        object["path"].as_str().unwrap().as_bytes(),
        daemon.path("single/one").as_os_str().as_bytes()
    );
    assert_eq!(object["events"], serde_json::json!(["close_write"]));
    assert_eq!(object["pid"], serde_json::json!(std::process::id()));
    assert_eq!(single.1, " 0", "no batch variables for a single event");
}
