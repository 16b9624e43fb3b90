//! Differential test: the same zone file served by gatehouse and by Knot DNS, the same packets
//! sent to both over real UDP and TCP sockets, and the responses compared on rcode, every
//! header flag, the question bytes (case preserved), every section and the OPT record.
//! Deliberate differences are tested on their own at the end (docs/dns.md lists them).

mod common;

use common::{Knot, Q, Summary, ZONE, exchange, summarize};
use gatehouse_dns::{Server, load_zones};
use std::net::SocketAddr;

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const DS: u16 = 43;
const IXFR: u16 = 251;
const AXFR: u16 = 252;
const ANY: u16 = 255;
const CAA: u16 = 257;

fn gatehouse() -> Server {
    let zones = load_zones(&[ZONE]).expect("zone loads");
    Server::start(zones.shared(), "127.0.0.1:0".parse().unwrap(), 1).expect("server starts")
}

fn z(name: &str) -> String {
    if name.is_empty() {
        "example.test".into()
    } else {
        format!("{name}.example.test")
    }
}

/// Every case the issue lists, as (label, query).
fn cases() -> Vec<(&'static str, Q)> {
    let mut v: Vec<(&'static str, Q)> = vec![
        ("apex SOA", Q::new(&z(""), SOA)),
        ("apex NS with glue", Q::new(&z(""), NS)),
        ("apex A", Q::new(&z(""), A)),
        ("apex MX with additional", Q::new(&z(""), MX)),
        ("apex TXT", Q::new(&z(""), TXT)),
        ("apex CAA", Q::new(&z(""), CAA)),
        ("ns1 A", Q::new(&z("ns1"), A)),
        ("ns1 AAAA", Q::new(&z("ns1"), AAAA)),
        ("mail AAAA", Q::new(&z("mail"), AAAA)),
        ("CNAME to A", Q::new(&z("www"), A)),
        ("CNAME to AAAA", Q::new(&z("www"), AAAA)),
        ("CNAME asked for", Q::new(&z("www"), CNAME)),
        ("CNAME then NODATA", Q::new(&z("www"), MX)),
        ("own TTL", Q::new(&z("web"), A)),
        ("NODATA", Q::new(&z("web"), MX)),
        ("NODATA TXT", Q::new(&z("mail"), TXT)),
        ("mixed case owner", Q::new("mIxEd.EXAMPLE.test", A)),
        ("mixed case query", Q::new("WWW.Example.TeSt", A)),
        ("chain of three", Q::new(&z("chain1"), A)),
        ("chain ends in NODATA", Q::new(&z("chain1"), AAAA)),
        ("chain from the middle", Q::new(&z("chain2"), A)),
        ("chain CNAME asked", Q::new(&z("chain1"), CNAME)),
        ("CNAME loop", Q::new(&z("loop1"), A)),
        ("CNAME loop other end", Q::new(&z("loop2"), AAAA)),
        ("dangling CNAME NXDOMAIN", Q::new(&z("dangling"), A)),
        ("CNAME out of zone", Q::new(&z("out"), A)),
        ("wildcard A", Q::new(&z("x.wild"), A)),
        ("wildcard TXT", Q::new(&z("x.wild"), TXT)),
        ("wildcard NODATA", Q::new(&z("x.wild"), MX)),
        ("wildcard two labels deep", Q::new(&z("a.b.wild"), A)),
        ("the wildcard name itself", Q::new(&z("*.wild"), A)),
        (
            "explicit name beside a wildcard",
            Q::new(&z("explicit.wild"), A),
        ),
        ("explicit name NODATA", Q::new(&z("explicit.wild"), TXT)),
        (
            "below an explicit name NXDOMAIN",
            Q::new(&z("y.explicit.wild"), A),
        ),
        ("wildcard CNAME", Q::new(&z("x.wc"), A)),
        ("wildcard CNAME asked", Q::new(&z("x.wc"), CNAME)),
        ("wildcard CNAME into a chain", Q::new(&z("q.wcx"), A)),
        ("SRV with additional", Q::new(&z("_sip._tcp"), SRV)),
        ("SRV name NODATA", Q::new(&z("_sip._tcp"), A)),
        ("empty non-terminal _tcp", Q::new(&z("_tcp"), SRV)),
        ("PTR", Q::new(&z("ptr"), PTR)),
        ("TXT several strings", Q::new(&z("txt"), TXT)),
        ("empty non-terminal", Q::new(&z("c"), A)),
        ("empty non-terminal deeper", Q::new(&z("b.c"), AAAA)),
        ("below empty non-terminals", Q::new(&z("a.b.c"), A)),
        ("NXDOMAIN under an ENT", Q::new(&z("x.c"), A)),
        ("referral at the cut", Q::new(&z("sub"), A)),
        ("referral NS at the cut", Q::new(&z("sub"), NS)),
        ("referral below the cut", Q::new(&z("x.sub"), A)),
        ("glue name is a referral", Q::new(&z("ns.sub"), A)),
        ("deep referral", Q::new(&z("deep.a.sub"), AAAA)),
        ("DS at the cut is the parent's", Q::new(&z("sub"), DS)),
        ("referral with in-zone glue", Q::new(&z("deleg"), A)),
        ("DS at the second cut", Q::new(&z("deleg"), DS)),
        ("NXDOMAIN", Q::new(&z("nothere"), A)),
        ("NXDOMAIN MX", Q::new(&z("nothere"), MX)),
        ("NXDOMAIN deep", Q::new(&z("a.b.nothere"), AAAA)),
        ("REFUSED other zone", Q::new("foo.org", A)),
        ("REFUSED root", Q::new(".", SOA)),
        ("REFUSED parent", Q::new("test", SOA)),
        ("REFUSED sibling", Q::new("example2.test", A)),
        ("ANY at apex", Q::new(&z(""), ANY)),
        ("ANY at CNAME", Q::new(&z("www"), ANY)),
        ("ANY at A", Q::new(&z("mail"), ANY)),
        ("ANY NXDOMAIN", Q::new(&z("nx"), ANY)),
        ("no EDNS, 514 bytes: TC", Q::new(&z("big"), A)),
        ("EDNS 1232 fits", Q::new(&z("big"), A).edns(1232)),
        ("EDNS 4096 clamps to 1232", Q::new(&z("big"), A).edns(4096)),
        (
            "EDNS below 512 counts as 512",
            Q::new(&z("big"), A).edns(100),
        ),
        ("huge over EDNS 512: TC", Q::new(&z("huge"), TXT).edns(512)),
        (
            "huge over EDNS 1232: TC",
            Q::new(&z("huge"), TXT).edns(1232),
        ),
        ("huge without EDNS: TC", Q::new(&z("huge"), TXT)),
        ("huge over TCP", Q::new(&z("huge"), TXT).tcp()),
        (
            "huge over TCP with EDNS",
            Q::new(&z("huge"), TXT).edns(1232).tcp(),
        ),
        ("big over TCP", Q::new(&z("big"), A).tcp()),
        ("CNAME over TCP", Q::new(&z("www"), A).tcp()),
        ("NXDOMAIN over TCP", Q::new(&z("nothere"), A).tcp()),
        ("MX with EDNS", Q::new(&z(""), MX).edns(1232)),
        ("NXDOMAIN with EDNS", Q::new(&z("nothere"), A).edns(1232)),
        ("REFUSED with EDNS", Q::new("foo.org", A).edns(1232)),
        ("referral with EDNS", Q::new(&z("x.sub"), A).edns(1232)),
        ("AXFR over UDP", Q::new(&z(""), AXFR)),
        ("AXFR over TCP", Q::new(&z(""), AXFR).tcp()),
        ("IXFR over UDP", Q::new(&z(""), IXFR)),
    ];
    let mut q = Q::new(&z(""), A);
    q.edns = Some((1232, 0, true, Vec::new()));
    v.push(("DO bit echoed", q));
    let mut q = Q::new(&z(""), A);
    q.edns = Some((1232, 1, false, Vec::new()));
    v.push(("EDNS version 1: BADVERS", q));
    let mut q = Q::new(&z(""), A);
    q.edns = Some((1232, 0, false, vec![0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]));
    v.push(("valid client subnet", q));
    let mut q = Q::new(&z(""), A);
    q.edns = Some((1232, 0, false, vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
    v.push(("a cookie option is ignored", q));
    let mut q = Q::new(&z(""), A);
    q.class = 3;
    v.push(("class CH: REFUSED", q));
    let mut q = Q::new(&z(""), A);
    q.class = 255;
    v.push(("class ANY", q));
    let mut q = Q::new(&z(""), SOA);
    q.opcode = 4;
    v.push(("NOTIFY: NOTAUTH", q));
    let mut q = Q::new(&z(""), SOA);
    q.opcode = 5;
    v.push(("UPDATE: NOTAUTH", q));
    let mut q = Q::new(&z(""), SOA);
    q.opcode = 3;
    v.push(("opcode 3: NOTIMP", q));
    let mut q = Q::new(&z("www"), A);
    q.rd = true;
    v.push(("RD copied", q));
    v
}

fn compare(
    knot: SocketAddr,
    ours: SocketAddr,
    label: &str,
    packet: &[u8],
    tcp: bool,
) -> Result<(), String> {
    let k = exchange(knot, packet, tcp).map(|r| summarize(&r));
    let g = exchange(ours, packet, tcp).map(|r| summarize(&r));
    if k == g {
        Ok(())
    } else {
        Err(format!("{label}:\n  knot:      {k:?}\n  gatehouse: {g:?}"))
    }
}

#[test]
fn answers_match_knot() {
    let Some(knot) = Knot::start("example.test", std::path::Path::new(ZONE)) else {
        return;
    };
    let server = gatehouse();
    let cases = cases();
    let mut failures = Vec::new();
    for (i, (label, q)) in cases.iter().enumerate() {
        if let Err(e) = compare(
            knot.addr,
            server.udp_addr,
            label,
            &q.packet(0x1000 + i as u16),
            q.tcp,
        ) {
            failures.push(e);
        }
    }
    // Malformed or unusual packets that both servers answer.
    let good = Q::new(&z(""), A).packet(0x2000);
    let mut raw: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut trailing = good.clone();
    trailing.push(0);
    raw.push(("trailing garbage: FORMERR with the question", trailing));
    let mut no_question = good[..12].to_vec();
    no_question[5] = 0;
    raw.push(("no question: FORMERR", no_question));
    let mut missing_ar = good.clone();
    missing_ar[11] = 1;
    raw.push(("ARCOUNT without a record: FORMERR", missing_ar));
    let with_opt = Q::new(&z(""), A).edns(1232).packet(0x2001);
    let mut two_opt = with_opt.clone();
    two_opt[11] = 2;
    two_opt.extend_from_slice(&with_opt[with_opt.len() - 11..]);
    raw.push(("two OPT records: FORMERR", two_opt));
    let mut response = good.clone();
    response[2] |= 0x80;
    raw.push(("a response is not answered", response));
    for (label, packet) in &raw {
        if let Err(e) = compare(knot.addr, server.udp_addr, label, packet, false) {
            failures.push(e);
        }
    }
    let total = cases.len() + raw.len();
    assert!(
        total >= 60,
        "the issue asks for at least 60 queries; {total}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} queries differ from Knot:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} queries: gatehouse and Knot agree on all of them");
}

/// Where gatehouse deliberately answers differently from Knot 3.2 (docs/dns.md).
#[test]
fn deliberate_differences_from_knot() {
    let server = gatehouse();
    let good = Q::new(&z(""), A).packet(0x3000);
    // A readable header with a body that cannot be parsed gets FORMERR (Knot sends nothing):
    // the client learns at once instead of retrying into a timeout.
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut cut = good.clone();
    cut.truncate(20);
    for packet in [two_questions, cut, good[..12].to_vec()] {
        let r = exchange(server.udp_addr, &packet, false).expect("an answer is due");
        let s: Summary = summarize(&r);
        assert_eq!(
            (s.id, s.flags[1] & 0x0f, s.counts),
            (0x3000, 1, [0, 0, 0, 0])
        );
    }
    // Less than a header: nothing to answer.
    assert!(exchange(server.udp_addr, &good[..11], false).is_none());
    // A malformed Client Subnet option is FORMERR (RFC 7871 7.1.2); Knot ignores it.
    let mut q = Q::new(&z(""), A);
    q.edns = Some((1232, 0, false, vec![0, 8, 0, 8, 0, 1, 33, 0, 192, 0, 2, 0]));
    let r = summarize(&exchange(server.udp_addr, &q.packet(7), false).expect("answer"));
    assert_eq!(r.flags[1] & 0x0f, 1, "FORMERR");
    // CD is copied into the response (RFC 4035 3.1.6); Knot clears it.
    let mut q = Q::new(&z("www"), A);
    q.cd = true;
    let r = summarize(&exchange(server.udp_addr, &q.packet(8), false).expect("answer"));
    assert_eq!(r.flags, [0x84, 0x10]);
}
