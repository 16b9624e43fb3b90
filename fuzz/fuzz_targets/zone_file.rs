//! Zone file text: any input is either refused with an error that names a line of the file,
//! or read into records; records that build a zone give a zone that answers the SOA query for
//! its own apex with that SOA, authoritatively.
#![no_main]

use gatehouse_dns::{Authority, Responder, Transport, Zone, ZoneSet, zonefile};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const FILE: &str = "fuzz.zone";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A line number past the last line (plus one, for an entry left open at the end) would
    // send the user looking in the wrong place.
    let last_line = text.lines().count() + 1;
    let records = match zonefile::parse(text, FILE) {
        Ok(records) => records,
        Err(e) => {
            assert_eq!(e.file, FILE);
            assert!(e.line <= last_line, "error on line {} of {last_line}: {e}", e.line);
            assert!(!e.message.is_empty());
            return;
        }
    };
    for record in &records {
        assert!(record.line >= 1 && record.line <= last_line);
    }
    let zone = match Zone::build(FILE, records) {
        Ok(zone) => zone,
        Err(e) => {
            assert!(e.line <= last_line, "error on line {} of {last_line}: {e}", e.line);
            return;
        }
    };
    let query = soa_query(zone.origin());
    let zones = ZoneSet::new(vec![Arc::new(zone) as Arc<dyn Authority>]).expect("one zone");
    let peer = "127.0.0.1:53".parse().unwrap();
    let mut responder = Responder::new();
    let answer = responder
        .respond(&zones, &query, peer, Transport::Tcp)
        .expect("a query is answered");
    assert_eq!(&answer[..2], &query[..2], "ID echoed");
    assert_ne!(answer[2] & 0x04, 0, "authoritative");
    assert_eq!(answer[3] & 0x0f, 0, "NOERROR for the apex SOA");
    assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 1, "one SOA answer");
});

/// A query for the SOA of `origin` (wire form), class IN.
fn soa_query(origin: &[u8]) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(origin);
    q.extend_from_slice(&[0, 6, 0, 1]);
    q
}
