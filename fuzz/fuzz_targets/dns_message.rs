//! DNS message path: any bytes as a query, answered from the test zone and a service zone
//! (regions, a 100-instance service that needs TC, Client Subnet echo). The server must not
//! panic, must answer whenever there is a header that is not a response (FORMERR at worst),
//! and every answer must echo the ID, set QR and fit the UDP limit.
#![no_main]

use gatehouse_dns::{
    Authority, Endpoint, Responder, ServiceRecords, ServiceSnapshot, ServiceZone,
    ServiceZoneSettings, Transport, ZoneSet, load_zone,
};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

static ZONES: OnceLock<ZoneSet> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let zones = ZONES.get_or_init(|| {
        let file = load_zone(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/dns/tests/data/example.test.zone"
        )))
        .expect("test zone loads");
        ZoneSet::new(vec![Arc::new(file) as Arc<dyn Authority>, Arc::new(service_zone())])
            .expect("distinct origins")
    });
    let peer = "127.0.0.1:53".parse().unwrap();
    let mut responder = Responder::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let due = data.len() >= 12 && data[2] & 0x80 == 0;
        match responder.respond(zones, data, peer, transport) {
            None => assert!(!due, "a query with a header went unanswered"),
            Some(resp) => {
                assert!(due, "answered a packet that must be dropped");
                assert!(resp.len() >= 12);
                assert_eq!(&resp[..2], &data[..2], "ID echoed");
                assert_ne!(resp[2] & 0x80, 0, "QR set");
                if transport == Transport::Udp {
                    assert!(resp.len() <= 1232, "UDP answer within the advertised size");
                }
            }
        }
    }
});

/// Services "a" (two regions) and "big" (100 instances) under svc.test.
fn service_zone() -> ServiceZone {
    let ep = |i: usize, region: Option<&str>| Endpoint {
        id: format!("i{i}"),
        addr: format!("10.0.{}.{}", i / 200, i % 200 + 1).parse().unwrap(),
        port: 8000 + i as u16,
        weight: 1 + i as u32 % 3,
        region: region.map(Into::into),
        healthy: i % 5 != 0,
    };
    let settings = ServiceZoneSettings {
        origin: "svc.test.".into(),
        ttl: 5,
        regions: vec![
            ("eu".into(), vec![("10.1.0.0".parse().unwrap(), 16)]),
            ("us".into(), vec![("2001:db8::".parse().unwrap(), 32)]),
        ],
        ..Default::default()
    };
    let snapshot = ServiceSnapshot {
        services: vec![
            ServiceRecords {
                name: "a".into(),
                instances: vec![ep(1, Some("eu")), ep(2, Some("us")), ep(3, None)],
            },
            ServiceRecords {
                name: "big".into(),
                instances: (0..100).map(|i| ep(i, None)).collect(),
            },
        ],
    };
    ServiceZone::build(&settings, &snapshot, 1).expect("service zone builds")
}
