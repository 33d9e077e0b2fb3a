//! A triggerd process whose `[[channel]]` rule sends every message to a service through its
//! spool (`daemon_send`, `nats_forward`), and its `delivered` counter read over the control
//! socket. Stopped with SIGTERM (so it removes its channel) and reaped on drop.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

pub struct SendDaemon {
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for SendDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn daemon_bin() -> PathBuf {
    std::env::var_os("TRIGGERD_BIN")
        .map(PathBuf::from)
        .or_else(|| Some(std::env::current_exe().ok()?.with_file_name("triggerd")))
        .unwrap_or_else(|| PathBuf::from("triggerd"))
}

impl SendDaemon {
    /// Starts triggerd with `[broker] endpoint` and a channel `channel` sending to `service`.
    pub fn start(endpoint: &str, channel: &str, service: &str) -> Result<SendDaemon> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("control.sock");
        let config = dir.path().join("triggerd.conf");
        std::fs::write(
            &config,
            format!(
                "[daemon]\ncontrol = \"{}\"\nstate_dir = \"{}\"\n\n\
                 [broker]\nendpoint = \"{endpoint}\"\nspool = \"{}/spool\"\n\n\
                 [[channel]]\nname = \"{channel}\"\nsend = \"{service}\"\nwhen_full = \"block\"\n",
                socket.display(),
                dir.path().display(),
                dir.path().display()
            ),
        )?;
        let child = Command::new(daemon_bin())
            .arg("--config")
            .arg(&config)
            .env("TRIGGERD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start triggerd (build it with --release, or set TRIGGERD_BIN)")?;
        let daemon = SendDaemon {
            child,
            socket,
            _dir: dir,
        };
        crate::wait_until("the control socket", Duration::from_secs(60), || {
            daemon.delivered().is_ok()
        })?;
        Ok(daemon)
    }

    /// `remote.forwarder.delivered` from the daemon's status.
    pub fn delivered(&self) -> Result<u64> {
        delivered(&self.socket)
    }
}

fn delivered(socket: &Path) -> Result<u64> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(b"{\"verb\":\"status\"}\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let reply: serde_json::Value = serde_json::from_str(&line)?;
    Ok(reply["status"]["remote"]["forwarder"]["delivered"]
        .as_u64()
        .unwrap_or(0))
}
