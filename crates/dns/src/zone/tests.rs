use super::*;
use crate::zonefile;

const ZONE: &str = include_str!("../../tests/data/example.test.zone");

fn zone() -> Zone {
    Zone::build(
        "example.test.zone",
        zonefile::parse(ZONE, "example.test.zone").unwrap(),
    )
    .unwrap()
}

fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// Answers through the template path and through the planner; both must agree.
fn both(z: &Zone, name: &str, qtype: u16) -> Vec<u8> {
    let qname = wire(name);
    let lower = qname.to_ascii_lowercase();
    let starts = label_starts(&lower);
    let q = Question {
        id: 0x4242,
        flags_hi: 0x01,
        flags_lo: 0,
        qname_wire: &qname,
        qname_lower: &lower,
        label_starts: &starts,
        qtype,
        qclass: CLASS_IN,
    };
    let (mut plan, mut fast, mut slow) = (Plan::default(), Vec::new(), Vec::new());
    z.answer(&q, &mut plan, &mut fast);
    z.plan(&q, &mut plan);
    z.encode(&q, &plan, &mut slow);
    assert_eq!(fast, slow, "{name} {qtype}: template and planner differ");
    fast
}

fn counts(r: &[u8]) -> [u16; 4] {
    [4, 6, 8, 10].map(|i| u16::from_be_bytes([r[i], r[i + 1]]))
}

#[test]
fn templates_match_the_planner_for_every_name_and_type() {
    let z = zone();
    for node in &z.nodes {
        let name = crate::wire_to_text(&node.name);
        for t in [1, 2, 5, 6, 12, 15, 16, 28, 33, 43, 99, 257] {
            both(&z, &name, t);
        }
    }
}

#[test]
fn answers_preserve_the_query_spelling_and_copy_id_and_rd() {
    let z = zone();
    let r = both(&z, "WwW.Example.TEST", 1);
    assert_eq!(&r[0..2], &[0x42, 0x42]);
    assert_eq!(r[2], 0x85, "QR AA RD");
    assert_eq!(&r[12..12 + 18], &wire("WwW.Example.TEST")[..]);
    assert_eq!(counts(&r), [1, 2, 0, 0], "CNAME then web A");
}

#[test]
fn negative_answers_and_referrals() {
    let z = zone();
    let nx = both(&z, "nothere.example.test", 1);
    assert_eq!((nx[3] & 0x0f, counts(&nx)), (rcode::NXDOMAIN, [1, 0, 1, 0]));
    let nodata = both(&z, "web.example.test", 15);
    assert_eq!((nodata[3] & 0x0f, counts(&nodata)), (0, [1, 0, 1, 0]));
    let ent = both(&z, "b.c.example.test", 1);
    assert_eq!((ent[3] & 0x0f, counts(&ent)), (0, [1, 0, 1, 0]));
    let referral = both(&z, "deep.x.sub.example.test", 1);
    assert_eq!(referral[2] & 0x04, 0, "a referral is not authoritative");
    assert_eq!(counts(&referral), [1, 0, 2, 2]);
    let ds = both(&z, "sub.example.test", 43);
    assert_eq!((ds[2] & 0x04, counts(&ds)), (0x04, [1, 0, 1, 0]));
}

#[test]
fn wildcards_cnames_and_loops() {
    let z = zone();
    let w = both(&z, "anything.wild.example.test", 1);
    assert_eq!(counts(&w), [1, 1, 0, 0]);
    let not_under = both(&z, "y.explicit.wild.example.test", 1);
    assert_eq!(not_under[3] & 0x0f, rcode::NXDOMAIN);
    let chain = both(&z, "a.x.wcx.example.test", 1);
    assert_eq!(counts(&chain), [1, 4, 0, 0]);
    let looped = both(&z, "loop1.example.test", 1);
    assert_eq!(counts(&looped), [1, 2, 0, 0]);
    let dangling = both(&z, "dangling.example.test", 1);
    assert_eq!(
        (dangling[3] & 0x0f, counts(&dangling)),
        (rcode::NXDOMAIN, [1, 1, 1, 0])
    );
}

#[test]
fn fit_sheds_additional_then_sets_tc() {
    let z = zone();
    let mut mx = both(&z, "example.test", 15);
    let qname = wire("example.test");
    let lower = qname.clone();
    let starts = label_starts(&lower);
    let q = Question {
        id: 1,
        flags_hi: 0,
        flags_lo: 0,
        qname_wire: &qname,
        qname_lower: &lower,
        label_starts: &starts,
        qtype: 15,
        qclass: 1,
    };
    let mut plan = Plan::default();
    let meta = z.answer(&q, &mut plan, &mut mx);
    let full = mx.len();
    meta.fit(&mut mx, full - 1);
    assert_eq!(counts(&mx), [1, 2, 0, 1], "the AAAA is shed, not TC");
    assert_eq!(mx[2] & 0x02, 0);
    meta.fit(&mut mx, 40);
    assert_eq!(counts(&mx), [1, 0, 0, 0]);
    assert_eq!(mx[2] & 0x02, 0x02, "TC");
}

#[test]
fn bad_zones_are_refused_with_the_line() {
    let build = |text: &str| Zone::build("z", zonefile::parse(text, "z").unwrap()).unwrap_err();
    let head = "$ORIGIN a.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n";
    let e = build(&format!("{head}x CNAME y\nx A 192.0.2.1\n"));
    assert_eq!(e.line, 6);
    assert!(e.message.contains("CNAME and other data"), "{e}");
    let e = build(&format!("{head}other.test. A 192.0.2.1\n"));
    assert!(e.message.contains("outside the zone"), "{e}");
    let e = build(&format!("{head}@ SOA ns h 1 2 3 4 5\n"));
    assert!(e.message.contains("second SOA"), "{e}");
    let e = build("$ORIGIN a.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n");
    assert!(e.message.contains("no NS"), "{e}");
    let e = build("$ORIGIN a.test.\n$TTL 60\n@ NS ns\n");
    assert!(e.message.contains("no SOA"), "{e}");
}
