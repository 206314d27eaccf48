//! Real Redis topologies for the managed-Redis tests: a TLS `redis-server` with its own
//! CA (certificates made with the `openssl` CLI), a Sentinel group (one master, one
//! replica, three sentinels via `redis-server --sentinel`) and a three-master Cluster
//! (`redis-cli --cluster create`). Everything on loopback, in temp directories, killed
//! on drop. No Redis mock anywhere.
#![allow(dead_code)]

use super::free_port;
use super::redis::ensure_installed;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process (a data node or a sentinel), killed on drop.
pub struct Node {
    child: Option<Child>,
    /// The plain-text port (admin commands from the test).
    pub port: u16,
    pub dir: PathBuf,
}

impl Node {
    /// `redis-server <conf> <args…>` in `dir`; waits until the plain port answers PING.
    pub fn spawn(dir: &Path, conf: Option<&Path>, port: u16, args: &[String]) -> Node {
        assert!(ensure_installed("redis-server", "redis-server"), "redis-server is required: run `make deps-test`");
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("redis-server");
        if let Some(c) = conf {
            cmd.arg(c);
        }
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning", "--logfile", "redis.log"])
            .arg("--dir")
            .arg(dir)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn redis-server");
        let mut n = Node { child: Some(child), port, dir: dir.to_path_buf() };
        n.wait_ping();
        n
    }

    fn wait_ping(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.try_cmd(&["PING"]).is_ok_and(|v| v == "PONG") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server on {} exited at start ({status}):\n{log}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the node dies as a crashed host would, with no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).unwrap_or_else(|e| panic!("redis :{} {args:?}: {e}", self.port))
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<String> {
        resp(self.port, args)
    }

    /// A field of `INFO <section>`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let text = self.try_cmd(&["INFO", section]).ok()?;
        text.lines().find_map(|l| l.trim().strip_prefix(&format!("{field}:")).map(str::to_string))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One RESP command over plain TCP on loopback; replies flattened to text.
pub fn resp(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req)?;
    read_reply(&mut BufReader::new(s))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(std::io::Error::other(rest.to_string())),
        "$" => {
            let n: i64 = rest.parse().map_err(std::io::Error::other)?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            std::io::Read::read_exact(r, &mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).to_string())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(std::io::Error::other)?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private CA, a server certificate for 127.0.0.1/localhost and a client certificate,
/// all PEM in `dir`: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`.
/// Also `other-ca.pem`, a CA that signed neither.
pub fn tls_material(dir: &Path) {
    assert!(ensure_installed("openssl", "openssl"));
    std::fs::create_dir_all(dir).unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"), "-days", "2", "-subj", &format!("/CN=idfabric test {ca}")]);
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{who}.key"), "-out", &format!("{who}.csr"), "-subj", &format!("/CN={who}")]);
        openssl(dir, &["x509", "-req", "-in", &format!("{who}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &format!("{who}.pem"), "-days", "2", "-extfile", &format!("{who}.ext")]);
    }
}

/// A `redis-server` with a TLS port (certificates from [`tls_material`]) that demands
/// a client certificate, plus a plain port for the test's own commands.
pub struct TlsRedis {
    pub node: Node,
    pub tls_port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start(certs: &Path) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let tls_port = free_port();
        let p = |f: &str| certs.join(f).display().to_string();
        let args = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ];
        let node = Node::spawn(dir.path(), None, free_port(), &args);
        TlsRedis { node, tls_port, _dir: dir }
    }
}

/// One master, one replica and three sentinels (quorum 2) watching master `mymaster`,
/// with short failure detection (down after 1 s).
pub struct SentinelGroup {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

pub const MASTER_NAME: &str = "mymaster";

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let dir = tempfile::tempdir().unwrap();
        let master = Node::spawn(&dir.path().join("master"), None, free_port(), &[]);
        let replica =
            Node::spawn(&dir.path().join("replica"), None, free_port(), &["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()]);
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let d = dir.path().join(format!("sentinel{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let conf = d.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    master.port
                ),
            )
            .unwrap();
            sentinels.push(Node::spawn(&d, Some(&conf), free_port(), &["--sentinel".into()]));
        }
        let g = SentinelGroup { master, replica, sentinels, _dir: dir };
        // Ready: the replica is in sync and every sentinel knows it and the two others.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = g.replica.info("replication", "master_link_status").as_deref() == Some("up");
            let known = g.sentinels.iter().all(|s| {
                let replicas = s.try_cmd(&["SENTINEL", "REPLICAS", MASTER_NAME]).unwrap_or_default();
                let peers = s.try_cmd(&["SENTINEL", "SENTINELS", MASTER_NAME]).unwrap_or_default();
                replicas.contains(&g.replica.port.to_string()) && peers.matches("runid").count() == 2
            });
            if synced && known {
                return g;
            }
            assert!(Instant::now() < deadline, "the Sentinel group did not form");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `redis+sentinel://…/mymaster` listing all three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port as the sentinels name it now.
    pub fn master_port(&self) -> Option<u16> {
        let a = self.sentinels.iter().find_map(|s| s.try_cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).ok())?;
        a.lines().nth(1)?.parse().ok()
    }
}

/// Three cluster-enabled masters holding all 16384 slots, no replicas.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        assert!(ensure_installed("redis-cli", "redis-tools"), "redis-cli is required: run `make deps-test`");
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                // The cluster bus port is the data port + 10000 unless set: another test's
                // ephemeral port may hold that one, so the bus gets a free port of its own.
                let bus = free_port().to_string();
                let args: Vec<String> =
                    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "3000", "--cluster-port", &bus]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                Node::spawn(&dir.path().join(format!("node{i}")), None, free_port(), &args)
            })
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = cmd.args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("redis-cli");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| n.try_cmd(&["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(200));
        }
        Cluster { nodes, _dir: dir }
    }

    /// `redis+cluster://` with two of the three nodes as seeds (the third is found).
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}", self.nodes[0].port, self.nodes[1].port)
    }

    /// Keys matching `pattern` on every node, with the node's index.
    pub fn keys(&self, pattern: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for k in n.cmd(&["KEYS", pattern]).lines().filter(|k| !k.is_empty()) {
                out.push((i, k.to_string()));
            }
        }
        out
    }
}
