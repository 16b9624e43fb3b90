//! The service zone end to end: the real binary with `[dns]`, instances registered through the
//! admin API, answers read with dig. Health checks, stopped heartbeats and the client's subnet
//! must show in the answers; so must a reload of `[dns]`, and `gatehouse demo` answers too.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "service-dns-token-0123456789";
/// The zone's answer TTL in these tests: changes must reach DNS answers within it.
const TTL: Duration = Duration::from_secs(5);

/// dig's answer: the records' data, and the Client Subnet option it printed (if any).
struct Dig {
    data: Vec<String>,
    client_subnet: Option<String>,
    text: String,
}

fn dig(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
            name,
            qtype,
        ])
        .args(extra)
        .output()
        .expect("this test needs dig: apt-get install bind9-dnsutils (.ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {name} {qtype}: {text}");
    let mut data = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if line.trim().is_empty() {
            in_answer = false;
        } else if in_answer {
            // owner TTL class type data...
            let fields: Vec<&str> = line.split_whitespace().collect();
            data.push(fields[4..].join(" "));
        }
    }
    let client_subnet = text
        .lines()
        .find_map(|l| l.strip_prefix("; CLIENT-SUBNET: "))
        .map(str::to_owned);
    Dig {
        data,
        client_subnet,
        text,
    }
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn a_records(server: SocketAddr, name: &str, extra: &[&str]) -> BTreeSet<String> {
    let (name, extra) = (
        name.to_owned(),
        extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        dig(server, &name, "A", &extra).data.into_iter().collect()
    })
    .await
    .unwrap()
}

/// A test upstream on its own loopback address (127.0.0.N), so each instance has a distinct
/// A record.
async fn upstream_on(name: &str, ip: &str) -> TestUpstream {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    TestUpstream::serve(name, listener)
}

async fn admin_send(admin: SocketAddr, method: Method, path: &str, body: String) -> StatusCode {
    send(
        &h1(),
        method,
        admin,
        path,
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        Bytes::from(body),
    )
    .await
    .status
}

async fn register(admin: SocketAddr, id: &str, up: &TestUpstream, region: &str, ttl: &str) {
    let body = format!(
        r#"{{"address": "{}", "port": {}, "region": "{region}", "ttl": "{ttl}"}}"#,
        up.addr.ip(),
        up.addr.port()
    );
    let status = admin_send(
        admin,
        Method::PUT,
        &format!("/registry/services/web/instances/{id}"),
        body,
    )
    .await;
    assert!(status.is_success(), "register {id}: {status}");
}

fn service_config(extra_dns: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listeners]]
name = "main"
listen = "127.0.0.1:0"

[[routes]]
cluster = "web"

[[clusters]]
name = "web"
discovery = {{ registry = "web" }}
[clusters.health_check]
path = "/status/200"
interval = "100ms"
jitter = "10ms"
timeout = "200ms"
rise = 1
fall = 1

[regions]
eu = ["10.1.0.0/16"]
us = ["10.2.0.0/16"]

[dns]
listen = "127.0.0.1:0"
{extra_dns}
[dns.services]
zone = "svc.test."
ttl = "{}s"
"#,
        TTL.as_secs()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_registrations_health_heartbeats_and_the_client_subnet() {
    let u1 = upstream_on("u1", "127.0.0.1").await;
    let u2 = upstream_on("u2", "127.0.0.2").await;
    let u3 = upstream_on("u3", "127.0.0.3").await;
    let gw = Gatehouse::start(bin(), &service_config(""), &[]).await;
    let (admin, dns) = (gw.admin.unwrap(), gw.dns.expect("dns address"));

    register(admin, "u1", &u1, "eu", "60s").await;
    register(admin, "u2", &u2, "eu", "60s").await;
    // u3 lives on heartbeats: a 2 s lease, renewed every 300 ms until `beating` is dropped.
    register(admin, "u3", &u3, "us", "2s").await;
    let beating = tokio_util::sync::CancellationToken::new();
    let heartbeat = {
        let beating = beating.clone();
        tokio::spawn(async move {
            while !beating.is_cancelled() {
                let status = admin_send(
                    admin,
                    Method::POST,
                    "/registry/services/web/instances/u3/heartbeat",
                    String::new(),
                )
                .await;
                assert_eq!(status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let all = set(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    assert!(
        eventually(TTL, async || a_records(dns, "web.svc.test", &[]).await
            == all)
        .await,
        "all three instances: {:?}",
        a_records(dns, "web.svc.test", &[]).await
    );

    // SRV: one record per instance with its port, targets with their addresses as glue.
    let srv = dig(dns, "_web._tcp.svc.test", "SRV", &[]);
    let ports: BTreeSet<String> = srv
        .data
        .iter()
        .map(|d| d.split_whitespace().nth(2).unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = [&u1, &u2, &u3]
        .iter()
        .map(|u| u.addr.port().to_string())
        .collect();
    assert_eq!(ports, expected, "{}", srv.text);
    assert!(srv.text.contains("u1.web.svc.test.") && srv.text.contains(";; ADDITIONAL SECTION"));
    assert!(srv.text.contains(" aa"), "authoritative: {}", srv.text);

    // The client's subnet picks its region's instances and the answer says for how wide a
    // network it holds (RFC 7871 scope: the region's /16).
    let eu = dig(dns, "web.svc.test", "A", &["+subnet=10.1.7.0/24"]);
    assert_eq!(
        eu.data.iter().cloned().collect::<BTreeSet<_>>(),
        set(&["127.0.0.1", "127.0.0.2"]),
        "{}",
        eu.text
    );
    assert_eq!(
        eu.client_subnet.as_deref(),
        Some("10.1.7.0/24/16"),
        "{}",
        eu.text
    );
    let us = dig(dns, "web.svc.test", "A", &["+subnet=10.2.0.0/24"]);
    assert_eq!(us.data, ["127.0.0.3"], "{}", us.text);
    let nowhere = dig(dns, "web.svc.test", "A", &["+subnet=192.0.2.0/24"]);
    assert_eq!(
        nowhere.data.len(),
        3,
        "in no region: every instance: {}",
        nowhere.text
    );

    // Round robin: the first address moves from one answer to the next.
    let firsts: BTreeSet<String> = (0..3)
        .map(|_| dig(dns, "web.svc.test", "A", &[]).data[0].clone())
        .collect();
    assert_eq!(firsts, all, "each instance comes first in turn");

    // u1 fails its health check: it leaves the answers within the TTL.
    u1.stop();
    let stopped = Instant::now();
    assert!(
        eventually(TTL, async || a_records(dns, "web.svc.test", &[]).await
            == set(&["127.0.0.2", "127.0.0.3"]))
        .await,
        "u1 still answered {:?} after its health check failed",
        a_records(dns, "web.svc.test", &[]).await
    );
    eprintln!(
        "u1 left the DNS answers {:?} after it stopped",
        stopped.elapsed()
    );
    // The eu client now gets its region's one healthy instance.
    assert_eq!(
        a_records(dns, "web.svc.test", &["+subnet=10.1.0.0/24"]).await,
        set(&["127.0.0.2"])
    );

    // u3's heartbeats stop: it leaves once its 2 s lease runs out, well within lease + TTL.
    beating.cancel();
    heartbeat.await.unwrap();
    let silent = Instant::now();
    assert!(
        eventually(Duration::from_secs(2) + TTL, async || {
            a_records(dns, "web.svc.test", &[]).await == set(&["127.0.0.2"])
        })
        .await,
        "u3 still answered after its heartbeats stopped"
    );
    eprintln!(
        "u3 left the DNS answers {:?} after its last heartbeat",
        silent.elapsed()
    );
    // The us client falls back to every healthy instance.
    assert_eq!(
        a_records(dns, "web.svc.test", &["+subnet=10.2.0.0/24"]).await,
        set(&["127.0.0.2"])
    );
    // An unknown service: NXDOMAIN with the zone's SOA.
    let missing = dig(dns, "nothere.svc.test", "A", &[]);
    assert!(
        missing.text.contains("NXDOMAIN") && missing.text.contains("SOA"),
        "{}",
        missing.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_zone_files_and_a_bad_zone_file_is_refused() {
    let dir = gatehouse_test_support::temp_dir("service-dns-zones");
    let zone = dir.join("static.zone");
    let write_zone = |addr: &str| {
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN static.test.\n$TTL 60\n@ IN SOA ns.static.test. admin.static.test. 1 60 60 60 60\n  IN NS ns.static.test.\nwww IN A {addr}\n"
            )
            .replace('@', "static.test."),
        )
        .unwrap();
    };
    write_zone("192.0.2.1");
    let config = service_config(&format!("zones = [\"{}\"]", zone.display()));
    let gw = Gatehouse::start(bin(), &config, &[]).await;
    let dns = gw.dns.unwrap();
    assert_eq!(dig(dns, "www.static.test", "A", &[]).data, ["192.0.2.1"]);
    // Both zones answer from one server.
    let soa = dig(dns, "svc.test", "SOA", &[]);
    assert!(
        soa.data[0].starts_with("ns.svc.test. hostmaster.svc.test."),
        "{}",
        soa.text
    );

    // A reload without the zone file: its names are no longer ours (REFUSED); the service
    // zone keeps answering from the same sockets.
    let without = service_config("");
    let www = async || {
        tokio::task::spawn_blocking(move || dig(dns, "www.static.test", "A", &[]))
            .await
            .unwrap()
    };
    std::fs::write(&gw.config_path, &without).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), async || www()
            .await
            .text
            .contains("REFUSED"))
        .await,
        "the zone file left the config"
    );
    // Adding back a zone file with an error refuses the whole reload: nothing changes.
    std::fs::write(&zone, "this is not a zone\n").unwrap();
    std::fs::write(&gw.config_path, &config).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), async || {
            gw.stderr().contains("config reload refused") && gw.stderr().contains("static.zone:1")
        })
        .await,
        "{}",
        gw.stderr()
    );
    assert!(www().await.text.contains("REFUSED"));
    let soa = dig(dns, "svc.test", "SOA", &[]);
    assert_eq!(
        soa.data.len(),
        1,
        "the service zone still answers: {}",
        soa.text
    );
    // Fixed: the next reload serves the new file.
    write_zone("192.0.2.2");
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), async || www().await.data
            == ["192.0.2.2"])
        .await,
        "{}",
        www().await.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_dns_for_its_services() {
    let demo = Demo::start().await;
    assert!(
        demo.banner.lines().any(|l| l.contains(&format!(
            "dig @{} -p {}",
            demo.dns.ip(),
            demo.dns.port()
        )) && l.contains("demo.svc.gatehouse")),
        "the banner shows dig lines for the bound port: {}",
        demo.banner
    );
    let dns = demo.dns;
    // The three demo upstreams share 127.0.0.1: one A record, three SRV records.
    let a = tokio::task::spawn_blocking(move || dig(dns, "demo.svc.gatehouse", "A", &[]))
        .await
        .unwrap();
    assert_eq!(a.data, ["127.0.0.1"], "{}", a.text);
    let srv = tokio::task::spawn_blocking(move || dig(dns, "_demo._tcp.svc.gatehouse", "SRV", &[]))
        .await
        .unwrap();
    assert_eq!(srv.data.len(), 3, "{}", srv.text);
}
