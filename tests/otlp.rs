//! OTLP export (`--features otlp`): the per-request span reaches a collector over
//! OTLP/HTTP, in the caller's trace, and the upstream's `traceparent` names it as the
//! parent. Run with `cargo test --features otlp --test integration otlp::`.

use crate::common;
use common::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A minimal OTLP/HTTP collector: answers 200 to every POST and keeps the bodies.
fn collector() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || loop {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                sink.lock().unwrap().push(buf[head_end..head_end + len].to_vec());
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    (port, bodies)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test]
async fn request_spans_are_exported_in_the_callers_trace() {
    let (port, bodies) = collector();
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(
        &["dev-wf"],
        &format!(
            "  - name: a\n    match: {{ host: a.test }}\n    auth: bearer\n    upstream: [{}]\n\
             tracing: {{ otlp_endpoint: \"http://127.0.0.1:{port}\" }}\naudit: {{ output: audit.log }}\n",
            echo.addr()
        ),
    );
    let gw = Gateway::start(&env);
    assert!(gw.log().contains("exporting request spans over OTLP"), "{}", gw.log());
    let token = env.mint("dev-wf", "alice", &[]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = client()
        .get(format!("{}/x", env.proxy()))
        .header("host", "a.test")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tp = echo_headers(resp).await["traceparent"].as_str().unwrap().to_string();
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    let our_span = unhex(&tp[36..52]);

    // The batch exporter sends within its schedule (5 s by default).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = bodies.lock().unwrap().clone();
        let hit = got.iter().any(|b| {
            b.windows(16).any(|w| w == unhex(trace).as_slice())
                && b.windows(8).any(|w| w == our_span.as_slice())
                && b.windows(8).any(|w| w == unhex("00f067aa0ba902b7").as_slice())
        });
        if hit {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span with trace {trace} and span {} exported ({} bodies)",
            &tp[36..52],
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = std::fs::read_to_string(env.path().join("audit.log")).unwrap();
    assert!(audit.contains(&format!("\"trace_id\":\"{trace}\"")), "{audit}");
}
