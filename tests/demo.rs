//! `idfabric demo` does what it says: the repo's own `routes.yaml` and `providers/`
//! (ports moved to free ones), every printed `curl` line executed, and each answer
//! compared with the `expect NNN` the demo printed above it.

use crate::common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the demo told the user to try.
#[derive(Debug)]
struct Try {
    comment: String,
    expect: u16,
    host: Option<String>,
    token_var: Option<String>,
    url: String,
}

fn parse(printed: &str) -> (HashMap<String, String>, Vec<Try>) {
    let mut vars = HashMap::new();
    let mut tries = Vec::new();
    let mut comment = String::new();
    for line in printed.lines() {
        if let Some(rest) = line.strip_prefix("export ") {
            let (var, value) = rest.split_once("='").expect("export VAR='value'");
            vars.insert(var.to_string(), value.split('\'').next().unwrap().to_string());
        } else if line.starts_with('#') {
            comment = line.to_string();
        } else if line.starts_with("curl ") {
            let expect = comment
                .split("expect ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no `expect NNN` above {line:?}: {comment:?}"));
            let host = line.split("-H 'Host: ").nth(1).map(|r| r.split('\'').next().unwrap().to_string());
            let token_var = line.split("Bearer $").nth(1).map(|r| r.split('"').next().unwrap().to_string());
            let url = line.split_whitespace().last().unwrap().to_string();
            assert!(url.starts_with("http://"), "{line}");
            tries.push(Try { comment: comment.clone(), expect, host, token_var, url });
        }
    }
    (vars, tries)
}

#[tokio::test]
async fn every_demo_curl_line_gets_the_status_the_demo_promised() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let mut rewrite: Vec<(String, String)> = vec![
        ("127.0.0.1:8080".into(), format!("127.0.0.1:{http}")),
        ("127.0.0.1:8443".into(), format!("127.0.0.1:{https}")),
        ("127.0.0.1:9090".into(), format!("127.0.0.1:{admin}")),
    ];
    for p in 3001..=3005 {
        rewrite.push((format!("127.0.0.1:{p}"), format!("127.0.0.1:{}", free_port())));
    }
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let mut text = std::fs::read_to_string(from).unwrap();
        for (a, b) in &rewrite {
            text = text.replace(a.as_str(), b);
        }
        std::fs::write(to, text).unwrap();
    };
    copy(&repo.join("routes.yaml"), &dir.path().join("routes.yaml"));
    std::fs::create_dir_all(dir.path().join("providers")).unwrap();
    for entry in std::fs::read_dir(repo.join("providers")).unwrap() {
        let p = entry.unwrap().path();
        copy(&p, &dir.path().join("providers").join(p.file_name().unwrap()));
    }

    let mut child = Command::new(BIN)
        .args(["demo", "--config"])
        .arg(dir.path().join("routes.yaml"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo { child };
    // The banner ends with a line of `=`; read it on a thread so a silent demo fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        for line in lines.by_ref() {
            let end = line.len() > 20 && line.bytes().all(|b| b == b'=');
            printed.push_str(&line);
            printed.push('\n');
            if end {
                break;
            }
        }
        let _ = tx.send(printed);
        for _ in lines {}
    });
    let printed = rx.recv_timeout(Duration::from_secs(60)).expect("the demo printed no banner");

    let deadline = Instant::now() + Duration::from_secs(30);
    while blocking_status(&format!("http://127.0.0.1:{admin}/readyz")).ok() != Some(200) {
        assert!(Instant::now() < deadline, "demo gateway not ready; it printed:\n{printed}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (vars, tries) = parse(&printed);
    assert!(vars.len() >= 4, "expected tokens for both users of both providers:\n{printed}");
    let authed = tries.iter().filter(|t| t.token_var.is_some()).count();
    assert!(authed >= 4 * 3, "expected a curl line per user and route:\n{printed}");
    assert!(tries.iter().any(|t| t.token_var.is_none()), "no public route line:\n{printed}");
    assert!(tries.iter().any(|t| t.expect == 200) && tries.iter().any(|t| t.expect >= 400), "{printed}");

    let mut failures = Vec::new();
    for t in &tries {
        let mut rb = client().get(&t.url);
        if let Some(h) = &t.host {
            rb = rb.header(reqwest::header::HOST, h);
        }
        if let Some(v) = &t.token_var {
            let token = vars.get(v).unwrap_or_else(|| panic!("${v} was never exported:\n{printed}"));
            rb = rb.bearer_auth(token);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status != t.expect {
            failures.push(format!("{}\n  {} -> {status} {body}", t.comment, t.url));
            continue;
        }
        if status == 200 && t.token_var.is_some() {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["headers"]["x-identity-sub"].is_string(), "{}: no identity headers upstream: {body}", t.comment);
        }
        if status >= 400 {
            // The comment names the reason the gateway gives.
            let reason = t.comment.split("expect ").nth(1).unwrap().split_whitespace().nth(1).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if !reason.is_empty() && v["reason"] != reason {
                failures.push(format!("{}\n  reason {} (demo said {reason})", t.comment, v["reason"]));
            }
        }
    }
    assert!(failures.is_empty(), "the demo's promises that did not hold:\n{}\n\nprinted:\n{printed}", failures.join("\n"));

    // The admin instructions name the token file instead of printing the token, and
    // the line they print works as written (with the file's content in its place).
    let token = std::fs::read_to_string(dir.path().join("certs/admin.token")).unwrap().trim().to_string();
    assert!(!printed.contains(&token), "the demo printed the admin token:\n{printed}");
    let line = printed
        .lines()
        .find(|l| l.contains("/providers") && l.contains("Authorization: Bearer $(cat "))
        .unwrap_or_else(|| panic!("no admin instruction:\n{printed}"));
    let url = line.rsplit(' ').next().unwrap();
    let resp = client().get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{line}");
    assert_eq!(client().get(url).send().await.unwrap().status(), 401, "{line}: the operator path is guarded");
}
