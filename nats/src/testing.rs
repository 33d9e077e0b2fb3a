//! Real `nats-server` processes for tests and benchmarks (feature `testing`): one node or a
//! cluster, each node with its JetStream store in a temp dir, on ports the server picks itself
//! (`port: -1`, read back from `--ports_file_dir`). A node killed with SIGKILL restarts on its
//! old client port (clients' endpoints name it) and routes to the nodes still up. Every
//! process is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a server may take to start.
const DEADLINE: Duration = Duration::from_secs(90);

use triggerd_testkit::{wait_for, KillOnDrop};

/// One `nats-server` process and its directory.
pub struct Node {
    name: String,
    dir: PathBuf,
    process: Option<KillOnDrop>,
    /// `nats://127.0.0.1:PORT` for clients.
    pub client: String,
    /// The route URL other nodes connect to (clusters only).
    pub route: Option<String>,
    /// Lines added to the node's config (authorization, say).
    extra: String,
}

/// NATS servers for one test or benchmark.
pub struct Nats {
    /// The temp dir holding one subdirectory per node (config, log, JetStream store);
    /// removed when the `Nats` is dropped.
    pub dir: tempfile::TempDir,
    /// The servers, in start order (`n1`, `n2`, ...).
    pub nodes: Vec<Node>,
    clustered: bool,
}

/// `"nats":[...]` or `"cluster":[...]` of a ports file.
fn first_url(ports: &serde_json::Value, key: &str) -> Option<String> {
    ports.get(key)?.get(0)?.as_str().map(str::to_string)
}

impl Node {
    fn config(&self, port: &str, routes: Option<&[String]>) -> String {
        let mut text = format!(
            "server_name: {}\nhost: 127.0.0.1\nport: {port}\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            self.name,
            self.dir.join("js").display()
        );
        text.push_str(&self.extra);
        if let Some(routes) = routes {
            let routes: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!(
                "cluster {{ name: triggerd, host: 127.0.0.1, port: -1, routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        text
    }

    /// Starts the server on `port` (`-1`: any) and waits for its ports file.
    fn spawn(&mut self, port: &str, routes: Option<&[String]>) {
        let conf = self.dir.join("nats.conf");
        std::fs::write(&conf, self.config(port, routes)).expect("nats.conf");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .expect("log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server (Debian package nats-server; scripts/deps installs it)");
        let ports_file = self.dir.join(format!("nats-server_{}.ports", child.id()));
        self.process = Some(KillOnDrop(child));
        let ports: serde_json::Value = wait_for("nats-server's ports file", DEADLINE, || {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(|p| p.0.try_wait()) {
                panic!("nats-server exited with {status}:\n{}", self.log());
            }
            let text = std::fs::read_to_string(&ports_file).ok()?;
            serde_json::from_str(&text).ok()
        });
        self.client = first_url(&ports, "nats").expect("client url");
        self.route = first_url(&ports, "cluster");
    }

    /// The server's stdout and stderr so far (empty if there is no log yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn port(&self) -> String {
        self.client.rsplit(':').next().unwrap_or("-1").to_string()
    }

    /// Whether the server was started and not killed since ([`Nats::kill`]; a
    /// [`Nats::restart`] starts it again).
    pub fn running(&self) -> bool {
        self.process.is_some()
    }
}

impl Nats {
    fn new(root: &Path, prefix: &str) -> Nats {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(root)
            .expect("tempdir");
        Nats {
            dir,
            nodes: Vec::new(),
            clustered: false,
        }
    }

    fn node(&mut self, name: &str) -> Node {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        Node {
            name: name.to_string(),
            dir,
            process: None,
            client: String::new(),
            route: None,
            extra: String::new(),
        }
    }

    /// One JetStream server, its files in a new temp dir under `root`.
    pub fn single(root: &Path) -> Nats {
        Nats::single_with(root, "")
    }

    /// The temp dir the nodes live in (removed on drop).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// One JetStream server with `extra` in its config.
    pub fn single_with(root: &Path, extra: &str) -> Nats {
        let mut nats = Nats::new(root, "triggerd-nats");
        let mut node = nats.node("n1");
        node.extra = format!("{extra}\n");
        node.spawn("-1", None);
        nats.nodes.push(node);
        nats.wait_ready();
        nats
    }

    /// A JetStream cluster of `size` nodes (the first one starts alone, routing to an address
    /// nobody listens on until the others route to it).
    pub fn cluster(root: &Path, size: usize) -> Nats {
        let mut nats = Nats::new(root, "triggerd-nats-cluster");
        nats.clustered = true;
        let mut first = nats.node("n1");
        first.spawn("-1", Some(&["nats://127.0.0.1:1".to_string()]));
        let seed = vec![first.route.clone().expect("route url")];
        nats.nodes.push(first);
        for i in 2..=size {
            let mut node = nats.node(&format!("n{i}"));
            node.spawn("-1", Some(&seed));
            nats.nodes.push(node);
        }
        nats.wait_ready();
        nats
    }

    /// Every node's client URL, as a `[broker] endpoint`.
    pub fn endpoint(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.client.as_str()).collect();
        urls.join(",")
    }

    /// Waits until every running node is ready (with a JetStream leader, in a cluster).
    pub fn wait_ready(&self) {
        let mark = if self.clustered {
            "metadata leader"
        } else {
            "Server is ready"
        };
        for node in self.nodes.iter().filter(|n| n.running()) {
            wait_for("nats-server to be ready", DEADLINE, || {
                node.log().contains(mark).then_some(())
            });
        }
    }

    /// SIGKILL to node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            let _ = process.0.kill();
            let _ = process.0.wait();
        }
    }

    /// Starts node `i` again on its old client port, routing to the nodes that are up.
    pub fn restart(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && n.running())
            .filter_map(|(_, n)| n.route.clone())
            .collect();
        let port = self.nodes[i].port();
        let clustered = self.clustered;
        let node = &mut self.nodes[i];
        node.spawn(&port, clustered.then_some(routes.as_slice()));
    }
}
