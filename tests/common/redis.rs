//! A real `redis-server` for tests: started on a free loopback port with persistence
//! off (`--save '' --appendonly no`), in its own temp directory, killed on drop.
//! No Redis mock anywhere.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `bin` is on `PATH`.
pub fn have(bin: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {bin} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
}

/// Makes `bin` available, installing the Debian `package` when it is missing and this
/// process may (root, apt-get present). `.ci/run` and `make test` install these first;
/// this is the fallback for a bare `cargo test`. Returns whether `bin` is now on PATH.
pub fn ensure_installed(bin: &str, package: &str) -> bool {
    if have(bin) {
        return true;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !have("apt-get") {
        eprintln!(
            "{bin} is missing and cannot be installed here (needs root and apt-get): install the `{package}` package"
        );
        return false;
    }
    eprintln!("{bin} is missing: installing the `{package}` Debian package");
    let run = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = run(&["update", "-qq"]);
    let _ = run(&["install", "-y", "-qq", "--no-install-recommends", package]);
    have(bin)
}

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`. Panics with a clear message when
    /// `redis-server` is missing and cannot be installed.
    pub fn start() -> RedisServer {
        assert!(
            ensure_installed("redis-server", "redis-server"),
            "redis-server is required by the sign-in tests: run `make deps-test` (or apt-get install redis-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let child = Self::spawn(port, dir.path());
        let mut r = RedisServer { child: Some(child), port, _dir: dir };
        r.wait_ping();
        r
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    fn wait_ping(&mut self) {
        let port = self.port;
        let r = self;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if r.try_cmd(&["PING"]).is_ok_and(|v| v == "PONG") {
                return;
            }
            if let Some(c) = r.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("redis-server exited at start: {status}");
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT` for `session.store`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A restart that keeps the data: `SHUTDOWN SAVE` (a snapshot in the server's
    /// directory), `down` without Redis, then the same port and directory again.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.try_cmd(&["SHUTDOWN", "SAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        std::thread::sleep(down);
        self.child = Some(Self::spawn(self.port, self._dir.path()));
        self.wait_ping();
    }

    /// Kills the server (the "Redis down" case); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs one command; simple replies, bulk strings and arrays are flattened to text
    /// (array items joined by newlines, nil as the empty string).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req)?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }
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
            r.read_exact(&mut buf)?;
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
