//! The service zone through the real request path (`Responder`), responses read back with
//! hickory-proto.

use super::*;
use crate::authority::{Transport, ZoneSet};
use crate::respond::Responder;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

fn ep(id: &str, addr: &str, weight: u32, region: Option<&str>, healthy: bool) -> Endpoint {
    Endpoint {
        id: id.into(),
        addr: addr.parse().unwrap(),
        port: 8080,
        weight,
        region: region.map(Into::into),
        healthy,
    }
}

fn settings() -> ServiceZoneSettings {
    ServiceZoneSettings {
        origin: "svc.gatehouse.".into(),
        ttl: 5,
        policy: Policy::RoundRobin,
        overrides: vec![ServiceOverride {
            service: "quick".into(),
            ttl: Some(1),
            policy: Some(Policy::Weighted),
        }],
        regions: vec![
            ("eu".into(), vec![("10.1.0.0".parse().unwrap(), 16)]),
            ("us".into(), vec![("10.2.0.0".parse().unwrap(), 16)]),
        ],
        nameserver_addrs: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn snapshot() -> ServiceSnapshot {
    ServiceSnapshot {
        services: vec![
            ServiceRecords {
                name: "api".into(),
                instances: vec![
                    ep("a1", "192.0.2.1", 1, Some("eu"), true),
                    ep("a2", "192.0.2.2", 1, Some("eu"), true),
                    ep("a3", "192.0.2.3", 1, Some("us"), true),
                    ep("a4", "192.0.2.4", 1, None, false),
                    ep("v6.host:1", "2001:db8::1", 1, None, true),
                ],
            },
            ServiceRecords {
                name: "down".into(),
                instances: vec![
                    ep("d1", "192.0.2.11", 1, None, false),
                    ep("d2", "192.0.2.12", 1, None, false),
                ],
            },
            ServiceRecords {
                name: "quick".into(),
                instances: vec![
                    ep("heavy", "192.0.2.21", 3, None, true),
                    ep("light", "192.0.2.22", 1, None, true),
                ],
            },
        ],
    }
}

struct Client {
    zones: ZoneSet,
    responder: Responder,
}

impl Client {
    fn new(s: &ServiceZoneSettings, snap: &ServiceSnapshot) -> Self {
        let zone = ServiceZone::build(s, snap, 1).unwrap();
        Client {
            zones: ZoneSet::new(vec![Arc::new(zone)]).unwrap(),
            responder: Responder::new(),
        }
    }

    fn raw(&mut self, packet: &[u8], peer: &str) -> Vec<u8> {
        let peer: SocketAddr = format!("{peer}:5353").parse().unwrap();
        self.responder
            .respond(&self.zones, packet, peer, Transport::Udp)
            .unwrap()
            .to_vec()
    }

    fn ask(&mut self, name: &str, qtype: u16) -> Message {
        Message::from_vec(&self.raw(&query(name, qtype, None), "127.0.0.1")).unwrap()
    }
}

/// A query packet, with an OPT record carrying `ecs` (address, source prefix) when given.
fn query(name: &str, qtype: u16, ecs: Option<(&str, u8)>) -> Vec<u8> {
    let mut p = vec![
        0x12,
        0x34,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(ecs.is_some()),
    ];
    for l in name.split('.').filter(|l| !l.is_empty()) {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    if let Some((addr, prefix)) = ecs {
        let addr: IpAddr = addr.parse().unwrap();
        let (family, octets) = match addr {
            IpAddr::V4(a) => (1u8, a.octets().to_vec()),
            IpAddr::V6(a) => (2u8, a.octets().to_vec()),
        };
        let bytes = (prefix as usize).div_ceil(8);
        let opt_len = 8 + bytes;
        p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, opt_len as u8]);
        p.extend_from_slice(&[0, 8, 0, 4 + bytes as u8, 0, family, prefix, 0]);
        p.extend_from_slice(&octets[..bytes]);
    }
    p
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_lists_only_healthy_instances_and_rotates() {
    let mut c = Client::new(&settings(), &snapshot());
    let m = c.ask("api.svc.gatehouse", 1);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(sorted(addrs(&m)), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    assert!(m.answers.iter().all(|r| r.ttl == 5));
    let firsts: Vec<String> = (0..6)
        .map(|_| addrs(&c.ask("api.svc.gatehouse", 1))[0].clone())
        .collect();
    // Round robin: each of the three comes first in turn.
    assert_eq!(firsts[0..3], firsts[3..6]);
    assert_eq!(sorted(firsts[0..3].to_vec()).len(), 3);
    assert_ne!(firsts[0], firsts[1]);
    assert_ne!(firsts[1], firsts[2]);
    let m = c.ask("API.Svc.Gatehouse", 28);
    assert_eq!(addrs(&m), ["2001:db8::1"]);
    assert_eq!(m.queries[0].name().to_ascii(), "API.Svc.Gatehouse.");
}

#[test]
fn srv_has_weights_ports_targets_and_glue() {
    let mut c = Client::new(&settings(), &snapshot());
    let m = c.ask("_quick._tcp.svc.gatehouse", 33);
    let mut srv: Vec<(u16, u16, String)> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.weight, s.port, s.target.to_ascii()),
            other => panic!("{other:?}"),
        })
        .collect();
    srv.sort();
    assert_eq!(
        srv,
        [
            (1, 8080, "light.quick.svc.gatehouse.".to_string()),
            (3, 8080, "heavy.quick.svc.gatehouse.".to_string()),
        ]
    );
    assert!(m.answers.iter().all(|r| r.ttl == 1), "override TTL");
    let glue: HashMap<String, String> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii(), a.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(glue["heavy.quick.svc.gatehouse."], "192.0.2.21");
    assert_eq!(glue["light.quick.svc.gatehouse."], "192.0.2.22");
    // The target names answer too; an id that is no DNS label gets a derived one.
    let m = c.ask("heavy.quick.svc.gatehouse", 1);
    assert_eq!(addrs(&m), ["192.0.2.21"]);
    let m = c.ask("v6-host-1.api.svc.gatehouse", 28);
    assert_eq!(addrs(&m), ["2001:db8::1"]);
    // Unhealthy instances have no name.
    let m = c.ask("a4.api.svc.gatehouse", 1);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn weighted_policy_puts_instances_first_by_weight() {
    let mut c = Client::new(&settings(), &snapshot());
    let mut heavy = 0;
    for _ in 0..400 {
        if addrs(&c.ask("quick.svc.gatehouse", 1))[0] == "192.0.2.21" {
            heavy += 1;
        }
    }
    assert_eq!(heavy, 300, "weight 3 against 1 comes first 3 times in 4");
    assert_eq!(
        weighted_order(&[5, 1, 1]),
        [0, 0, 1, 0, 2, 0, 0],
        "nginx: a a b a c a a"
    );
    // Huge weights are scaled, and every instance keeps a slot.
    let order = weighted_order(&[10000, 1]);
    assert!(order.len() <= 260 && order.contains(&1));
}

#[test]
fn no_healthy_instance_fails_open() {
    let mut c = Client::new(&settings(), &snapshot());
    let m = c.ask("down.svc.gatehouse", 1);
    assert_eq!(sorted(addrs(&m)), ["192.0.2.11", "192.0.2.12"]);
}

#[test]
fn negative_answers_and_the_apex() {
    let mut c = Client::new(&settings(), &snapshot());
    let m = c.ask("nothere.svc.gatehouse", 1);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    assert_eq!(m.authorities[0].ttl, 5);
    // The service exists but has no AAAA / MX: NODATA.
    let m = c.ask("quick.svc.gatehouse", 28);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    let m = c.ask("_tcp.svc.gatehouse", 33);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let m = c.ask("svc.gatehouse", 6);
    match &m.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.serial, 1);
            assert_eq!(soa.mname.to_ascii(), "ns.svc.gatehouse.");
        }
        other => panic!("{other:?}"),
    }
    let m = c.ask("svc.gatehouse", 2);
    assert!(matches!(&m.answers[0].data, RData::NS(n) if n.0.to_ascii() == "ns.svc.gatehouse."));
    assert_eq!(m.additionals.len(), 1, "glue for ns.");
    assert_eq!(addrs(&c.ask("ns.svc.gatehouse", 1)), ["127.0.0.1"]);
    // ANY: one RRset.
    let m = c.ask("api.svc.gatehouse", 255);
    assert_eq!(m.answers.len(), 3);
}

#[test]
fn client_region_by_peer_and_by_subnet_with_scope() {
    let mut c = Client::new(&settings(), &snapshot());
    let eu = sorted(addrs(
        &Message::from_vec(&c.raw(&query("api.svc.gatehouse", 1, None), "10.1.0.9")).unwrap(),
    ));
    assert_eq!(eu, ["192.0.2.1", "192.0.2.2"]);
    let raw = c.raw(
        &query("api.svc.gatehouse", 1, Some(("10.2.3.0", 24))),
        "10.1.0.9",
    );
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(addrs(&m), ["192.0.2.3"], "the subnet wins over the peer");
    // The echoed option: family 1, source 24, scope 16 (the region's network), 3 bytes.
    assert_eq!(raw[raw.len() - 11..], [0, 8, 0, 7, 0, 1, 24, 16, 10, 2, 3]);
    // A client in no region gets every healthy instance.
    let raw = c.raw(
        &query("api.svc.gatehouse", 1, Some(("192.0.2.0", 24))),
        "10.1.0.9",
    );
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(addrs(&m).len(), 3);
    assert_eq!(
        raw[raw.len() - 4],
        1,
        "scope up to the nearest region network"
    );
    // Answers that do not depend on the region say scope 0.
    let raw = c.raw(
        &query("quick.svc.gatehouse", 1, Some(("10.2.3.0", 24))),
        "127.0.0.1",
    );
    assert_eq!(raw[raw.len() - 4], 0);
    let raw = c.raw(
        &query("nothere.svc.gatehouse", 1, Some(("10.2.3.0", 24))),
        "127.0.0.1",
    );
    assert_eq!(raw[raw.len() - 11..raw.len() - 7], [0, 8, 0, 7]);
    assert_eq!(raw[raw.len() - 4], 0);
    // The AAAA answer has no regional instances: the same for everyone.
    let raw = c.raw(
        &query("api.svc.gatehouse", 28, Some(("10.2.3.0", 24))),
        "127.0.0.1",
    );
    assert_eq!(addrs(&Message::from_vec(&raw).unwrap()), ["2001:db8::1"]);
}

#[test]
fn large_answers_truncate_and_fit_over_tcp() {
    let instances = (0..100)
        .map(|i| {
            ep(
                &format!("n{i}"),
                &format!("10.9.{}.{}", i / 200, i % 200 + 1),
                1,
                None,
                true,
            )
        })
        .collect();
    let snap = ServiceSnapshot {
        services: vec![ServiceRecords {
            name: "big".into(),
            instances,
        }],
    };
    let mut c = Client::new(&settings(), &snap);
    // 100 records: 64 rotations, evenly spaced starts; each answer still has all 100.
    let zone = ServiceZone::build(&settings(), &snap, 1).unwrap();
    let answer = &zone.nodes[&b"\x03big\x03svc\x09gatehouse\x00"[..]].answers[0].1;
    assert_eq!(answer.sets[0].templates.len(), 64);
    let udp = c.raw(&query("big.svc.gatehouse", 1, None), "127.0.0.1");
    assert!(udp.len() <= 512);
    assert_eq!(udp[2] & 0x02, 0x02, "TC");
    let packet = query("big.svc.gatehouse", 1, None);
    let tcp = c
        .responder
        .respond(
            &c.zones,
            &packet,
            "127.0.0.1:1".parse().unwrap(),
            Transport::Tcp,
        )
        .unwrap();
    assert_eq!(Message::from_vec(tcp).unwrap().answers.len(), 100);
    // SRV over EDNS UDP: 25 records fit in 1232 bytes but not with all their glue, which is
    // shed whole records at a time before anything sets TC.
    let snap = ServiceSnapshot {
        services: vec![ServiceRecords {
            name: "mid".into(),
            instances: (0..25)
                .map(|i| {
                    ep(
                        &format!("n{i}"),
                        &format!("10.9.0.{}", i + 1),
                        1,
                        None,
                        true,
                    )
                })
                .collect(),
        }],
    };
    let mut c = Client::new(&settings(), &snap);
    let raw = c.raw(
        &query("_mid._tcp.svc.gatehouse", 33, Some(("10.0.0.0", 8))),
        "127.0.0.1",
    );
    assert!(raw.len() <= 1232);
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 25);
    assert!(
        (1..25).contains(&m.additionals.len()),
        "{}",
        m.additionals.len()
    );
}

#[test]
fn bad_names_and_ns_are_skipped_and_bad_origins_refused() {
    let snap = ServiceSnapshot {
        services: vec![
            ServiceRecords {
                name: "ns".into(),
                instances: vec![ep("x", "192.0.2.9", 1, None, true)],
            },
            ServiceRecords {
                name: "Bad.Name".into(),
                instances: vec![ep("x", "192.0.2.9", 1, None, true)],
            },
            ServiceRecords {
                name: "dup".into(),
                instances: vec![
                    ep("A", "192.0.2.31", 1, None, true),
                    ep("a", "192.0.2.32", 1, None, true),
                    ep("b", "192.0.2.32", 1, None, true),
                ],
            },
        ],
    };
    let mut c = Client::new(&settings(), &snap);
    assert_eq!(addrs(&c.ask("ns.svc.gatehouse", 1)), ["127.0.0.1"]);
    // Two instances on one host: one A record (an RRset has no duplicates), two SRV records.
    assert_eq!(
        addrs(&c.ask("dup.svc.gatehouse", 1)),
        ["192.0.2.31", "192.0.2.32"]
    );
    assert_eq!(addrs(&c.ask("a.dup.svc.gatehouse", 1)), ["192.0.2.31"]);
    assert_eq!(addrs(&c.ask("a-2.dup.svc.gatehouse", 1)), ["192.0.2.32"]);
    assert_eq!(c.ask("_dup._tcp.svc.gatehouse", 33).answers.len(), 3);
    let mut s = settings();
    s.origin = "bad..name".into();
    assert!(ServiceZone::build(&s, &snap, 1).is_err());
    s.origin = "x".repeat(70);
    assert!(ServiceZone::build(&s, &snap, 1).is_err());
}
