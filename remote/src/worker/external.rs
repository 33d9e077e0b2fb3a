//! External plugins: any executable in the worker's plugin directory, run once per request.
//!
//! # Protocol (JSON lines over stdin/stdout)
//!
//! The worker starts `PLUGIN_DIR/NAME` (no shell, no arguments) and writes exactly one JSON
//! object on its stdin, followed by a newline, then closes stdin:
//!
//! ```json
//! {"id":"0000000000000000000000000000002a","service":"demo","timeout_ms":30000,"payload":"text"}
//! ```
//!
//! `payload` is a string when the payload is UTF-8; otherwise it is absent and
//! `payload_bytes` holds the bytes as an array of numbers. The plugin answers on stdout, one
//! JSON object per line, flushed as it goes:
//!
//! * `{"output":"a line"}`: streamed to the client at once as a PARTIAL reply;
//! * `{"exit":0}`: the exit status reported in the FINAL reply (optional: without it, the
//!   process's own exit code is used);
//! * `{"error":"message"}`: streamed like output, and the status becomes 70 unless `exit`
//!   says otherwise.
//!
//! A stdout line that is not a JSON object is passed through as output, as is every stderr
//! line, so a plain script works too. The process is killed (SIGKILL) when the request's
//! timeout passes and the status is then 124. Plugin names are single path components
//! (`[A-Za-z0-9_.-]`, not starting with a dot), so a client cannot reach outside the
//! directory. An example lives in `etc/plugins/upper`.

use std::path::{Path, PathBuf};

use super::plugins::{Outcome, Plugin, PluginRequest, STATUS_PLUGIN_FAILED};
use super::process;

/// A plugin run from an executable speaking the JSON-lines protocol above.
pub struct External {
    path: PathBuf,
    user: Option<(u32, u32)>,
}

/// Whether `name` may name an external plugin.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl External {
    /// The plugin `name` in `dir`, if the name is acceptable and the file exists; it runs as
    /// `user` (uid, gid; `None`: the worker's own).
    pub fn find(dir: &Path, name: &str, user: Option<(u32, u32)>) -> Option<External> {
        if !valid_plugin_name(name) {
            return None;
        }
        let path = dir.join(name);
        path.is_file().then_some(External { path, user })
    }
}

fn request_line(request: &PluginRequest) -> Vec<u8> {
    let mut object = serde_json::json!({
        "id": format!("{:032x}", request.id),
        "service": request.service,
        "timeout_ms": request.timeout.as_millis() as u64,
    });
    match std::str::from_utf8(&request.payload) {
        Ok(text) => object["payload"] = text.into(),
        Err(_) => object["payload_bytes"] = request.payload.clone().into(),
    }
    let mut line = object.to_string().into_bytes();
    line.push(b'\n');
    line
}

impl Plugin for External {
    fn call(&self, request: &PluginRequest, partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        let mut declared: Option<i32> = None;
        let mut failed = false;
        let argv = [self.path.to_string_lossy().into_owned()];
        let mut on_line = |line: Vec<u8>| {
            let parsed: Option<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&line).ok();
            let Some(object) = parsed else {
                return partial(line);
            };
            if let Some(text) = object.get("output").and_then(|v| v.as_str()) {
                partial(text.as_bytes().to_vec());
            }
            if let Some(text) = object.get("error").and_then(|v| v.as_str()) {
                failed = true;
                partial(text.as_bytes().to_vec());
            }
            if let Some(code) = object.get("exit").and_then(|v| v.as_i64()) {
                declared = Some(code.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
            }
        };
        let result = process::run(
            &argv,
            &[],
            self.user,
            &request_line(request),
            request.timeout,
            &mut on_line,
        );
        match result {
            Ok(crate::ext::STATUS_TIMEOUT) => Outcome {
                status: crate::ext::STATUS_TIMEOUT,
                body: Vec::new(),
            },
            Ok(status) => {
                let status = declared.unwrap_or(if failed && status == 0 {
                    STATUS_PLUGIN_FAILED
                } else {
                    status
                });
                Outcome {
                    status,
                    body: Vec::new(),
                }
            }
            Err(e) => Outcome::failed(format!("plugin {}: {e}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn install(dir: &Path, name: &str, script: &str) {
        let path = dir.join(name);
        std::fs::write(&path, script).expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn request(payload: &[u8], timeout: Duration) -> PluginRequest {
        PluginRequest {
            id: 7,
            service: "demo".into(),
            payload: payload.to_vec(),
            timeout,
            hops: 0,
        }
    }

    #[test]
    fn speaks_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        install(
            dir.path(),
            "up",
            "#!/bin/sh\nread line\necho \"{\\\"output\\\":\\\"got $line\\\"}\"\necho plain\necho '{\"exit\":5}'\n",
        );
        let plugin = External::find(dir.path(), "up", None).expect("found");
        let mut lines = Vec::new();
        let outcome = plugin.call(&request(b"hi", Duration::from_secs(10)), &mut |l| {
            lines.push(l)
        });
        assert_eq!(outcome.status, 5);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(String::from_utf8_lossy(&lines[0]).contains("\"payload\":\"hi\""));
        assert_eq!(lines[1], b"plain");
    }

    #[test]
    fn killed_on_timeout_and_names_are_confined() {
        let dir = tempfile::tempdir().expect("tempdir");
        install(dir.path(), "slow", "#!/bin/sh\nexec sleep 30\n");
        let plugin = External::find(dir.path(), "slow", None).expect("found");
        let outcome = plugin.call(&request(b"", Duration::from_millis(200)), &mut |_| {});
        assert_eq!(outcome.status, crate::ext::STATUS_TIMEOUT);
        assert!(External::find(dir.path(), "../slow", None).is_none());
        assert!(External::find(dir.path(), ".hidden", None).is_none());
        assert!(External::find(dir.path(), "absent", None).is_none());
    }
}
