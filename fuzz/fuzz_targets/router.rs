//! Arbitrary hosts, paths and methods never panic the router, and a route is only returned when
//! its conditions hold.
#![no_main]

use gatehouse_http::router::{Router, normalize_host};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[listeners]]
name = "l"
listen = "127.0.0.1:0"
[[routes]]
hosts = ["a.example.com", "*.example.com"]
path_prefix = "/api/"
methods = ["GET"]
cluster = "c"
[[routes]]
path = "/exact"
cluster = "c"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<Vec<gatehouse_config::Route>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| gatehouse_config::parse(CONFIG, "fuzz").unwrap().routes);
    let router = Router::new(routes, "l");
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let method = http::Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()).unwrap_or(http::Method::GET);
    let _ = normalize_host(host);
    match router.find(host, path, &method, &http::HeaderMap::new()) {
        Some(0) => assert!(path.starts_with("/api/") && method == http::Method::GET),
        Some(1) => assert_eq!(path, "/exact"),
        Some(other) => panic!("route {other} does not exist"),
        None => {}
    }
});
