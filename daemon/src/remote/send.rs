//! `triggerctl send SERVICE [--plugin P] [--timeout T] [DATA|-]`: one request to a service
//! through the broker, straight from the command line (no daemon, no spool). Output lines are
//! printed as the worker streams them (PARTIAL replies); the exit code is the remote one.
//! The broker and credentials come from `--broker` with `--server-key`/`--secret-key` (CURVE)
//! or `--identity`/`--token` (PLAIN), or from the `[broker]` of the config file. A `nats://`
//! endpoint sends through JetStream instead; a `mirror` service then answers once per worker,
//! and the worst status is the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use triggerd_remote::{Client, ClientError};

use super::Credentials;
use crate::config::BrokerSettings;

/// Exit code when no answer came in time (as `timeout(1)` and the broker say).
pub const EXIT_NO_REPLY: u8 = 124;

/// What `triggerctl send` was asked to do.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub service: String,
    pub plugin: Option<String>,
    pub timeout: Duration,
    pub payload: Vec<u8>,
    /// The config whose `[broker]` to use when `broker` is not given.
    pub config: PathBuf,
    pub broker: Option<String>,
    pub identity: Option<String>,
    /// A file holding the token.
    pub token: Option<PathBuf>,
    /// The broker's CURVE public key (Z85), with `secret_key`.
    pub server_key: Option<String>,
    /// This host's CURVE secret key file.
    pub secret_key: Option<PathBuf>,
    /// Each output line as `{"output": LINE}`, then `{"status": N}`.
    pub json: bool,
}

/// Where to connect and as whom (with the config's `[broker]` when it came from there).
fn target(request: &SendRequest) -> Result<(String, Credentials, Option<BrokerSettings>), String> {
    if let Some(endpoint) = &request.broker {
        let credentials = match (&request.server_key, &request.secret_key) {
            (Some(server), Some(secret)) => Credentials::curve(server, secret)?,
            _ => Credentials::read(request.identity.clone(), request.token.as_deref())?,
        };
        return Ok((endpoint.clone(), credentials, None));
    }
    let config = crate::config::load(&request.config).map_err(|e| e.to_string())?;
    let broker = config.broker.ok_or_else(|| {
        format!(
            "{}: no [broker] section (or give --broker ENDPOINT)",
            request.config.display()
        )
    })?;
    let credentials = Credentials::load(&broker)?;
    Ok((broker.endpoint.clone(), credentials, Some(broker)))
}

fn print_lines(out: &mut impl Write, frames: &[Vec<u8>]) -> std::io::Result<()> {
    for frame in frames {
        out.write_all(frame)?;
        if frame.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

/// Where a request's output goes: its lines as they come (a failure's reason on stderr), or
/// with `json` one object per line on stdout (`{"output": LINE}`, `{"error": LINE}`) and
/// `{"status": N}` once the answer is in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `frames`; a closed stdout (`| head`) must not stop the request, so write
    /// errors are ignored.
    pub fn lines(self, frames: &[Vec<u8>], failed: bool) {
        if !self.json {
            let _ = match failed {
                false => print_lines(&mut std::io::stdout().lock(), frames),
                true => print_lines(&mut std::io::stderr().lock(), frames),
            };
            return;
        }
        let key = if failed { "error" } else { "output" };
        let mut out = std::io::stdout().lock();
        for frame in frames {
            let text = String::from_utf8_lossy(frame);
            for line in text.strip_suffix('\n').unwrap_or(&text).split('\n') {
                let _ = writeln!(out, "{}", serde_json::json!({ key: line }));
            }
        }
        let _ = out.flush();
    }

    /// The request's exit code, printed with `json`.
    pub fn status(self, code: u8) -> u8 {
        if self.json {
            println!("{}", serde_json::json!({ "status": code }));
        }
        code
    }
}

/// Runs the request; returns the process exit code (the remote status, clamped to 0-255;
/// 124 without an answer; 1 when the request could not be made).
pub fn send(request: &SendRequest) -> u8 {
    let (endpoint, credentials, broker) = match target(request) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("triggerctl: {e}");
            return 2;
        }
    };
    if triggerd_nats::is_nats(&endpoint) {
        return super::nats::send(request, &endpoint, &credentials, broker.as_ref());
    }
    let mut client = match Client::connect(&endpoint, credentials.client_options()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("triggerctl: {endpoint}: {e}");
            return 1;
        }
    };
    let output = Output { json: request.json };
    let reply = client.request(
        &request.service,
        request.plugin.as_deref().unwrap_or(""),
        &request.payload,
        request.timeout,
        |body| output.lines(body, false),
    );
    match reply {
        Ok(reply) => {
            // A FINAL body is the answer (echo) on success, the reason on failure.
            output.lines(&reply.body, reply.status != 0);
            output.status(u8::try_from(reply.status).unwrap_or(1))
        }
        Err(ClientError::Timeout(t)) => {
            eprintln!(
                "triggerctl: no answer from {endpoint} for `{}` within {}",
                request.service,
                humantime::format_duration(t)
            );
            EXIT_NO_REPLY
        }
        Err(e) => {
            eprintln!("triggerctl: {endpoint}: {e}");
            1
        }
    }
}
