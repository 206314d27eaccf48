//! The built-in echo app for `idfabric demo` and the tests: answers every request with
//! a JSON document of what it received (method, path, headers), so one can see
//! exactly what an upstream behind idfabric is told.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::collections::BTreeMap;

pub struct Echo {
    pub name: String,
}

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in req.headers.iter() {
            let v = String::from_utf8_lossy(v.as_bytes()).to_string();
            headers.entry(k.as_str().to_string()).and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v)
            }).or_insert(v);
        }
        let body = serde_json::json!({
            "app": self.name,
            "method": req.method.as_str(),
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
        });
        let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("content-length", bytes.len())
            .body(bytes)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
