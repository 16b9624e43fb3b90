//! DNS message path: any bytes as a query, answered from the test zone. The server must not
//! panic, must answer whenever there is a header that is not a response (FORMERR at worst),
//! and every answer must echo the ID, set QR and fit the UDP limit.
#![no_main]

use gatehouse_dns::{Responder, Transport, ZoneSet, load_zones};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ZONES: OnceLock<ZoneSet> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let zones = ZONES.get_or_init(|| {
        load_zones(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/dns/tests/data/example.test.zone")])
            .expect("test zone loads")
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
