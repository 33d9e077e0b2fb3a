//! `triggerctl [--socket PATH] status [--json]`: talks to a running triggerd over its control
//! socket. Exit codes: 0 ok, 1 the daemon could not be reached or refused, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use triggerd::control::{self, Reply, Request, Status};

#[derive(Parser)]
#[command(version, about = "Control a running triggerd")]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, default_value = "/run/triggerd/control.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Rules with their counters, and the state of the sources.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triggerctl: {e}");
            return ExitCode::from(1);
        }
    };
    let Verb::Status { json } = cli.verb;
    match runtime.block_on(control::request(&cli.socket, &Request::Status)) {
        Ok(Reply::Status(status)) => {
            if json {
                match serde_json::to_string_pretty(&status) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("triggerctl: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print_status(&status);
            }
            ExitCode::SUCCESS
        }
        Ok(Reply::Error(e)) => {
            eprintln!("triggerctl: daemon says: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("triggerctl: {}: {e}", cli.socket.display());
            ExitCode::from(1)
        }
    }
}

fn print_status(status: &Status) {
    println!(
        "triggerd pid {} config {} reloads {}",
        status.pid, status.config, status.reloads
    );
    if let Some(e) = &status.reload_error {
        println!("last reload refused (previous config running):\n{e}");
    }
    let w = &status.watch;
    println!(
        "fanotify: {} events, {} overflows, {} permission requests",
        w.events, w.overflows, w.permission_requests
    );
    for (path, why) in &w.failing_marks {
        println!("  not watched yet: {path}: {why}");
    }
    let header = [
        "RULE",
        "KIND",
        "SUBJECT",
        "EVENTS",
        "MATCHED",
        "FIRED",
        "FAILED",
        "DROPPED",
        "OVERFLOWED",
        "RUNNING",
        "QUEUED",
    ];
    let rows: Vec<Vec<String>> = status
        .rules
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                r.subject.clone(),
                r.events.clone(),
                r.matched.to_string(),
                r.fired.to_string(),
                r.failed.to_string(),
                r.dropped.to_string(),
                r.overflowed.to_string(),
                r.running.to_string(),
                r.queued.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
