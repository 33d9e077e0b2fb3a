//! `include`, `exclude` and `hidden` through a real daemon and real fanotify: an action writing
//! its own temporary file next to its input never fires the rule again, dot files and
//! excluded trees stay silent, and `include` keeps only what it names, in a recursive tree too.

mod common;

use std::fs;

use common::{runs_of, Daemon};

#[test]
fn exclude_hidden_and_include_decide_which_paths_fire() {
    let mut daemon = Daemon::start("");
    let d = daemon.dir.path().display().to_string();
    for dir in ["w", "w/.git", "logs", "logs/sub"] {
        fs::create_dir(daemon.path(dir)).unwrap();
    }
    // The action records the run, then writes `$$.tmp` beside its input, as editors and
    // converters do: without `exclude` that write would fire the rule again.
    let config = "[[watch]]\nname = \"filtered\"\npath = \"{dir}/w\"\nevents = [\"close_write\"]\n\
        exclude = [\"**/*.tmp\", \".git/**\"]\nhidden = false\nloop = true\n\
        exec = [\"/bin/sh\", \"-c\", \"\\\"$0\\\" \\\"$1\\\" filtered \\\"$2\\\" && echo x > \\\"$2.tmp\\\"\", \"{record}\", \"{out}\", \"$$\"]\n\n\
        [[watch]]\nname = \"logs\"\npath = \"{dir}/logs\"\nevents = [\"close_write\"]\nrecursive = true\n\
        include = [\"**/*.log\"]\n\
        exec = [\"{record}\", \"{out}\", \"logs\", \"$$\"]\n";
    daemon.write_config(config);
    daemon.reload();
    daemon.wait_watching();

    for rel in [
        "w/.hidden",
        "w/.git/index",
        "w/skip.tmp",
        "logs/a.txt",
        "logs/sub/b.txt",
    ] {
        fs::write(daemon.path(rel), "ignored").unwrap();
    }
    fs::write(daemon.path("w/input"), "data").unwrap();
    fs::write(daemon.path("logs/a.log"), "x").unwrap();
    fs::write(daemon.path("logs/sub/b.log"), "x").unwrap();

    // Once the run for `input` has exited, its `input.tmp` was closed: a file written now is
    // reported after it, so the run for `after` proves `input.tmp` was judged (and skipped).
    common::wait_for("the run for input to finish", common::DEADLINE, || {
        let done = daemon.rule("filtered").running == 0;
        (done && runs_of(&daemon, "filtered").contains(&format!("{d}/w/input"))).then_some(())
    });
    assert!(daemon.path("w/input.tmp").exists());
    fs::write(daemon.path("w/after"), "data").unwrap();
    common::wait_for("the run for after", common::DEADLINE, || {
        runs_of(&daemon, "filtered")
            .contains(&format!("{d}/w/after"))
            .then_some(())
    });
    let mut filtered = runs_of(&daemon, "filtered");
    filtered.sort();
    // Without the filter the action's own .tmp files fire it again and again: show a few.
    assert!(
        filtered == [format!("{d}/w/after"), format!("{d}/w/input")],
        "dot files, .git and .tmp files must never fire; {} runs: {:?}",
        filtered.len(),
        &filtered[..filtered.len().min(6)]
    );
    // The .txt files were written before the .log ones, so they were judged first.
    common::wait_for("both .log files", common::DEADLINE, || {
        (runs_of(&daemon, "logs").len() >= 2).then_some(())
    });
    let mut logs = runs_of(&daemon, "logs");
    logs.sort();
    assert_eq!(
        logs,
        [format!("{d}/logs/a.log"), format!("{d}/logs/sub/b.log")]
    );
}
