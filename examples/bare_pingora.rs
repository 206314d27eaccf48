//! A bare Pingora 0.9 passthrough proxy with default settings: the baseline that
//! `benches/load.sh` compares idfabric against (issue 3).
//!
//! One `ProxyHttp` whose `upstream_peer` returns one fixed plain-HTTP peer; no filters,
//! no logging, no metrics. Only the thread count (1 unless `--threads`) is set; every
//! other `ServerConf` field keeps Pingora's default (upstream keepalive pool 128, …).
//!
//! ```text
//! cargo build --release --example bare_pingora
//! target/release/examples/bare_pingora --listen 127.0.0.1:8081 --upstream 127.0.0.1:8082
//! ```

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::Result;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(name = "bare_pingora", about = "A bare Pingora passthrough proxy (benchmark baseline)")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream every request goes to (plain HTTP).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads of the proxy service.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads.max(1),
        // Not performance settings: keep concurrent instances from sharing files.
        pid_file: format!("/tmp/bare_pingora.{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/bare_pingora_upgrade.{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Passthrough { upstream: args.upstream });
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    server.run_forever();
}
