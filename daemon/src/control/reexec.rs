//! `triggerctl reexec`: asks the daemon to re-execute itself and waits until the new image
//! answers (its `execs` count grew), so that a script can go on once triggerd serves again.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::control::{self, Reply, Request};

async fn execs(socket: &Path) -> Option<(u64, u32)> {
    match control::request(socket, &Request::Status).await {
        Ok(Reply::Status(s)) => Some((s.execs, s.pid)),
        _ => None,
    }
}

/// Asks for the re-exec and waits (at most `timeout`) for the new image to answer.
pub async fn run(socket: &Path, timeout: Duration, json: bool) -> ExitCode {
    let Some((before, _)) = execs(socket).await else {
        eprintln!("triggerctl: {}: no answer", socket.display());
        return ExitCode::from(1);
    };
    match control::request(socket, &Request::Reexec).await {
        Ok(Reply::Done(_)) => {}
        Ok(Reply::Error(e)) => {
            eprintln!("triggerctl: {e}");
            return ExitCode::from(1);
        }
        Ok(_) => {
            eprintln!("triggerctl: unexpected reply");
            return ExitCode::from(1);
        }
        // The daemon may stop its control socket before the reply is out: whether the
        // re-exec happened is what the wait below finds out.
        Err(e) => tracing::debug!("no reply to reexec ({e}); waiting for the new image"),
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((now, pid)) = execs(socket).await {
            if now > before {
                match json {
                    true => println!(
                        "{}",
                        serde_json::json!({ "done": "re-executed", "pid": pid })
                    ),
                    false => println!("re-executed (pid {pid})"),
                }
                return ExitCode::SUCCESS;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("triggerctl: the daemon did not answer again within {timeout:?}");
    ExitCode::from(1)
}
