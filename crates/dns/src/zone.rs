//! A compiled zone: its names in a hash map keyed by lowercase wire form, the answer logic of
//! RFC 1034 4.3.2 as a plan of RRsets, and for every exact name a pre-encoded response that a
//! query only patches (ID, the client's spelling of the name, type, class, RD/CD).
//!
//! Semantics follow Knot DNS where RFCs leave room (docs/dns.md lists where they differ):
//! - AA on authoritative answers; referrals (the name is at or below a delegation) carry the
//!   NS RRset in authority, glue in additional and no AA; DS at a delegation is the parent's;
//! - NODATA and NXDOMAIN carry the SOA in authority with TTL min(SOA TTL, SOA minimum);
//! - CNAME chains are followed inside the zone (loops stop at the first repeat); a chain ending
//!   at a missing name is NXDOMAIN (RFC 6604);
//! - wildcards answer for names that do not exist below their parent (RFC 4592), with the
//!   query name as owner;
//! - A and AAAA of NS, MX and SRV targets inside the zone go in additional;
//! - ANY is answered with one RRset (RFC 8482), the one with the lowest type number.

use crate::fasthash::FastMap;
use crate::query::HEADER_LEN;
use crate::wire::Writer;
use crate::zonefile::{FileRecord, ZoneFileError};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_MX: u16 = 15;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_DS: u16 = 43;
pub(crate) const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// Query types answered from a precomputed response at a CNAME (others are built per query).
const CNAME_TEMPLATE_TYPES: &[u16] = &[1, 2, 6, 12, 15, 16, 28, 33, 257, 65];
/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 16;
/// Additional-section RRset boundaries remembered for truncation.
const MAX_CUTS: usize = 24;

/// Response codes used by the server.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    pub const NOTAUTH: u8 = 9;
}

/// Where the additional section starts and where each of its RRsets ends, so a response that
/// is too big for the client can shed whole additional RRsets before it needs TC.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub question_end: usize,
    pub additional_at: usize,
    /// RFC 7871 SCOPE PREFIX-LENGTH for the Client Subnet option echoed in the response.
    /// None (every file zone): the answer does not depend on the client, and the option is
    /// not echoed (as Knot without `edns-client-subnet`).
    pub ecs_scope: Option<u8>,
    cuts: [(u16, u16); MAX_CUTS],
    cut_count: u8,
}

impl Meta {
    pub fn new(question_end: usize) -> Self {
        Meta {
            question_end,
            additional_at: usize::MAX,
            ecs_scope: None,
            cuts: [(0, 0); MAX_CUTS],
            cut_count: 0,
        }
    }

    pub(crate) fn push_cut(&mut self, end: usize, count: u16) {
        if (self.cut_count as usize) < MAX_CUTS && end <= u16::MAX as usize {
            self.cuts[self.cut_count as usize] = (end as u16, count);
            self.cut_count += 1;
        }
    }

    /// Fits the response in `buf` into `limit` bytes: drops trailing additional RRsets, and
    /// when answer and authority alone do not fit, sends the question with TC set (as Knot
    /// does: a partial answer set would look complete to a careless client).
    pub fn fit(&self, buf: &mut Vec<u8>, limit: usize) {
        if buf.len() <= limit {
            return;
        }
        if self.additional_at <= limit {
            let mut keep = (self.additional_at, 0u16);
            for &(end, count) in &self.cuts[..self.cut_count as usize] {
                if end as usize <= limit {
                    keep = (end as usize, count);
                }
            }
            buf.truncate(keep.0);
            buf[10..12].copy_from_slice(&keep.1.to_be_bytes());
            return;
        }
        buf.truncate(self.question_end);
        buf[2] |= 0x02;
        buf[6..12].fill(0);
    }
}

/// An RRset: its records as pre-encoded type/class/TTL/RDATA tails, written after an owner.
#[derive(Debug)]
pub(crate) struct RRset {
    rtype: u16,
    tails: Vec<u8>,
    ends: Vec<u32>,
    /// Lowercase wire names the records point at (NS, MX, SRV, CNAME targets).
    targets: Vec<Box<[u8]>>,
}

impl RRset {
    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let tail = &self.tails[start..end as usize];
            start = end as usize;
            tail
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The node's own name.
    Node(u32),
    /// The query name (wildcard synthesis).
    Qname,
    /// The CNAME target of RRset (node, index) (wildcard synthesis inside a chain).
    Target(u32, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetRef {
    At(u32, u16),
    /// The SOA with the negative-caching TTL.
    NegSoa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    section: Section,
    owner: Owner,
    set: SetRef,
}

/// What a response holds, before encoding. Reused between queries.
#[derive(Debug, Default)]
pub struct Plan {
    rcode: u8,
    aa: bool,
    items: Vec<Item>,
}

/// A precomputed response for an exact name.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) bytes: Box<[u8]>,
    pub(crate) meta: Meta,
}

#[derive(Debug)]
struct Node {
    /// Lowercase wire form.
    name: Box<[u8]>,
    /// Sorted by type.
    rrsets: Vec<RRset>,
    /// The delegation at or above this node (never the apex).
    cut: Option<u32>,
    /// The node `*.<this name>`, if any.
    wildcard: Option<u32>,
    templates: Vec<(u16, Template)>,
    /// The NODATA response (any absent type); `None` at CNAMEs and delegations.
    nodata: Option<Template>,
    /// The referral, for names at or below a delegation.
    referral: Option<Template>,
}

impl Node {
    fn rrset(&self, rtype: u16) -> Option<u16> {
        self.rrsets
            .iter()
            .position(|s| s.rtype == rtype)
            .map(|i| i as u16)
    }
}

/// How a name was found.
enum Found {
    Exact(u32),
    /// The closest existing ancestor.
    Encloser(u32),
}

/// A compiled zone.
#[derive(Debug)]
pub struct Zone {
    origin: Box<[u8]>,
    origin_text: String,
    nodes: Vec<Node>,
    index: FastMap<u32>,
    apex: u32,
    neg_soa: RRset,
    serial: u32,
}

/// A query as the zone sees it.
pub struct Question<'q> {
    pub id: u16,
    pub flags_hi: u8,
    pub flags_lo: u8,
    /// Wire form, the client's case.
    pub qname_wire: &'q [u8],
    pub qname_lower: &'q [u8],
    /// Label starts of `qname_lower`.
    pub label_starts: &'q [u8],
    pub qtype: u16,
    pub qclass: u16,
}

impl Zone {
    /// Compiles records (from one file) into a zone whose origin is the SOA's owner.
    pub fn build(file: &str, records: Vec<FileRecord>) -> Result<Zone, ZoneFileError> {
        let err = |line: usize, message: String| ZoneFileError {
            file: file.to_string(),
            line,
            message,
        };
        let mut soas = records.iter().filter(|r| matches!(r.rdata, RData::SOA(_)));
        let soa = soas.next().ok_or_else(|| {
            err(
                0,
                "no SOA record: a zone needs exactly one, at its apex".into(),
            )
        })?;
        if let Some(second) = soas.next() {
            return Err(err(
                second.line,
                format!("a second SOA record (the first is on line {})", soa.line),
            ));
        }
        let origin_name = soa.name.to_lowercase();
        let origin = wire_lower(&origin_name);
        let RData::SOA(soa_data) = &soa.rdata else {
            unreachable!("filtered on SOA")
        };
        let neg_ttl = soa.ttl.min(soa_data.minimum);

        let mut zone = Zone {
            origin: origin.clone(),
            origin_text: origin_name.to_ascii(),
            nodes: Vec::new(),
            index: FastMap::default(),
            apex: 0,
            neg_soa: RRset {
                rtype: TYPE_SOA,
                tails: Vec::new(),
                ends: Vec::new(),
                targets: Vec::new(),
            },
            serial: soa_data.serial,
        };
        zone.neg_soa.push(TYPE_SOA, neg_ttl, &soa.rdata);
        zone.apex = zone.node(&origin);

        for r in &records {
            if !origin_name.zone_of(&r.name) {
                return Err(err(
                    r.line,
                    format!("{} is outside the zone {}", r.name, zone.origin_text),
                ));
            }
            let rtype: u16 = r.rdata.record_type().into();
            let name = wire_lower(&r.name);
            // Every ancestor exists (empty non-terminals), so a lookup that misses finds its
            // closest encloser by walking up.
            let mut at = 0;
            while name.len() - at > origin.len() {
                at += 1 + name[at] as usize;
                zone.node(&name[at..]);
            }
            let id = zone.node(&name) as usize;
            let node = &mut zone.nodes[id];
            let set = match node.rrsets.iter().position(|s| s.rtype == rtype) {
                Some(i) => &mut node.rrsets[i],
                None => {
                    node.rrsets.push(RRset {
                        rtype,
                        tails: Vec::new(),
                        ends: Vec::new(),
                        targets: Vec::new(),
                    });
                    node.rrsets.last_mut().expect("just pushed")
                }
            };
            if rtype == TYPE_CNAME && !set.ends.is_empty() {
                return Err(err(r.line, format!("a second CNAME at {}", r.name)));
            }
            // RFC 2181 5.2: one TTL per RRset; the first one given holds.
            let ttl = set.ttl().unwrap_or(r.ttl);
            set.push(rtype, ttl, &r.rdata);
            let node = &zone.nodes[id];
            if node.rrset(TYPE_CNAME).is_some() && node.rrsets.len() > 1 {
                return Err(err(
                    r.line,
                    format!("{} has a CNAME and other data (RFC 1034 3.6.2)", r.name),
                ));
            }
        }
        if zone.nodes[zone.apex as usize].rrset(TYPE_NS).is_none() {
            return Err(err(
                0,
                format!("the zone apex {} has no NS records", zone.origin_text),
            ));
        }
        for node in &mut zone.nodes {
            node.rrsets.sort_by_key(|s| s.rtype);
        }
        zone.link();
        zone.precompute();
        Ok(zone)
    }

    /// The origin, lowercase wire form.
    pub fn origin(&self) -> &[u8] {
        &self.origin
    }

    /// The origin as text ("example.test.").
    pub fn origin_text(&self) -> &str {
        &self.origin_text
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Number of names (including empty non-terminals).
    pub fn names(&self) -> usize {
        self.nodes.len()
    }

    fn node(&mut self, name: &[u8]) -> u32 {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            name: name.into(),
            rrsets: Vec::new(),
            cut: None,
            wildcard: None,
            templates: Vec::new(),
            nodata: None,
            referral: None,
        });
        self.index.insert(name.into(), id);
        id
    }

    /// Sets each node's delegation and wildcard links (parents before children).
    fn link(&mut self) {
        let mut order: Vec<u32> = (0..self.nodes.len() as u32).collect();
        order.sort_by_key(|&id| labels(&self.nodes[id as usize].name));
        for id in order {
            if id == self.apex {
                continue;
            }
            let name = &self.nodes[id as usize].name;
            let parent_name = &name[1 + name[0] as usize..];
            let parent = self.index.get(parent_name).copied();
            let is_wildcard = name[0] == 1 && name[1] == b'*';
            let own_cut = self.nodes[id as usize].rrset(TYPE_NS).is_some();
            let inherited = parent.and_then(|p| self.nodes[p as usize].cut);
            self.nodes[id as usize].cut = inherited.or(own_cut.then_some(id));
            if let (true, Some(p)) = (is_wildcard, parent) {
                self.nodes[p as usize].wildcard = Some(id);
            }
        }
    }

    /// Encodes the response of every exact name for the types it holds (and NODATA, CNAME
    /// chains for common types, referrals), with the name in lowercase; queries patch them.
    fn precompute(&mut self) {
        let mut plan = Plan::default();
        let mut buf = Vec::with_capacity(512);
        for id in 0..self.nodes.len() as u32 {
            let node = &self.nodes[id as usize];
            let name: Box<[u8]> = node.name.clone();
            let starts = label_starts(&name);
            let mut q = Question {
                id: 0,
                flags_hi: 0,
                flags_lo: 0,
                qname_wire: &name,
                qname_lower: &name,
                label_starts: &starts,
                qtype: 0,
                qclass: CLASS_IN,
            };
            let mut make = |zone: &Zone, qtype: u16| {
                q.qtype = qtype;
                zone.plan(&q, &mut plan);
                let meta = zone.encode(&q, &plan, &mut buf);
                Template {
                    bytes: buf.as_slice().into(),
                    meta,
                }
            };
            let mut templates = Vec::new();
            let (mut nodata, mut referral) = (None, None);
            if node.cut.is_some() {
                // Any type but DS at the cut itself gets the referral. TYPE_A stands for any.
                referral = Some(make(self, TYPE_A));
            } else if node.rrset(TYPE_CNAME).is_some() {
                templates.push((TYPE_CNAME, make(self, TYPE_CNAME)));
                for &t in CNAME_TEMPLATE_TYPES {
                    templates.push((t, make(self, t)));
                }
            } else {
                let types: Vec<u16> = node.rrsets.iter().map(|s| s.rtype).collect();
                for t in types {
                    templates.push((t, make(self, t)));
                }
                // 0 is no type a node holds: the NODATA answer, patched with the real type.
                nodata = Some(make(self, 0));
            }
            let node = &mut self.nodes[id as usize];
            node.templates = templates;
            node.nodata = nodata;
            node.referral = referral;
        }
    }

    /// Answers a question whose name is at or below this zone's origin: writes the response
    /// (without OPT) to `buf` and returns its truncation data.
    pub fn answer(&self, q: &Question<'_>, plan: &mut Plan, buf: &mut Vec<u8>) -> Meta {
        if q.qtype != TYPE_ANY
            && let Found::Exact(id) = self.find(q.qname_lower, q.label_starts)
        {
            let node = &self.nodes[id as usize];
            let template = match node.cut {
                Some(cut) if !(cut == id && q.qtype == TYPE_DS) => node.referral.as_ref(),
                Some(_) => None,
                None => node
                    .templates
                    .iter()
                    .find(|(t, _)| *t == q.qtype)
                    .map(|(_, t)| t)
                    .or(node.nodata.as_ref()),
            };
            if let Some(t) = template {
                patch(t, q, buf);
                return t.meta;
            }
        }
        self.plan(q, plan);
        self.encode(q, plan, buf)
    }

    fn find(&self, qname: &[u8], starts: &[u8]) -> Found {
        for (i, &s) in starts.iter().enumerate() {
            let suffix = &qname[s as usize..];
            if suffix.len() < self.origin.len() {
                break;
            }
            if let Some(&id) = self.index.get(suffix) {
                return if i == 0 {
                    Found::Exact(id)
                } else {
                    Found::Encloser(id)
                };
            }
        }
        Found::Encloser(self.apex)
    }

    /// Resolves a question into a plan (RFC 1034 4.3.2 within one zone).
    fn plan(&self, q: &Question<'_>, plan: &mut Plan) {
        plan.items.clear();
        plan.rcode = rcode::NOERROR;
        plan.aa = true;
        match self.find(q.qname_lower, q.label_starts) {
            Found::Exact(id) => match self.nodes[id as usize].cut {
                Some(cut) if !(cut == id && q.qtype == TYPE_DS) => self.referral(cut, plan),
                _ => self.answer_at(id, Owner::Node(id), q.qtype, plan),
            },
            Found::Encloser(id) => {
                let node = &self.nodes[id as usize];
                if let Some(cut) = node.cut {
                    self.referral(cut, plan);
                } else if let Some(w) = node.wildcard {
                    self.answer_at(w, Owner::Qname, q.qtype, plan);
                } else {
                    plan.rcode = rcode::NXDOMAIN;
                    plan.items.push(neg_soa());
                }
            }
        }
    }

    fn referral(&self, cut: u32, plan: &mut Plan) {
        plan.aa = false;
        let ns = self.nodes[cut as usize]
            .rrset(TYPE_NS)
            .expect("a cut has NS");
        plan.items.push(Item {
            section: Section::Authority,
            owner: Owner::Node(cut),
            set: SetRef::At(cut, ns),
        });
        self.additional_for(cut, ns, plan);
    }

    /// Answers `qtype` at node `id` (found as `owner`), following CNAMEs.
    fn answer_at(&self, mut id: u32, mut owner: Owner, qtype: u16, plan: &mut Plan) {
        for _ in 0..MAX_CHAIN {
            let node = &self.nodes[id as usize];
            let hit = if qtype == TYPE_ANY {
                (!node.rrsets.is_empty()).then_some(0)
            } else {
                node.rrset(qtype)
            };
            if let Some(i) = hit {
                plan.items.push(Item {
                    section: Section::Answer,
                    owner,
                    set: SetRef::At(id, i),
                });
                self.additional_for(id, i, plan);
                return;
            }
            let Some(c) = node.rrset(TYPE_CNAME) else {
                plan.items.push(neg_soa());
                return;
            };
            plan.items.push(Item {
                section: Section::Answer,
                owner,
                set: SetRef::At(id, c),
            });
            let target = &node.rrsets[c as usize].targets[0];
            if !self.contains(target) {
                return;
            }
            let starts = label_starts(target);
            let next = match self.find(target, &starts) {
                Found::Exact(t) if self.nodes[t as usize].cut.is_none() => (t, Owner::Node(t)),
                Found::Encloser(e) if self.nodes[e as usize].cut.is_none() => {
                    match self.nodes[e as usize].wildcard {
                        Some(w) => (w, Owner::Target(id, c)),
                        None => {
                            plan.rcode = rcode::NXDOMAIN;
                            plan.items.push(neg_soa());
                            return;
                        }
                    }
                }
                // A chain into a delegation ends with the CNAME.
                _ => return,
            };
            // A loop ends at the first name already answered.
            let seen = plan
                .items
                .iter()
                .any(|it| it.section == Section::Answer && it.owner == next.1);
            if seen {
                return;
            }
            (id, owner) = next;
        }
    }

    /// Adds A and AAAA of the targets of RRset (id, i) if it is NS, MX or SRV.
    fn additional_for(&self, id: u32, i: u16, plan: &mut Plan) {
        let set = &self.nodes[id as usize].rrsets[i as usize];
        if !matches!(set.rtype, TYPE_NS | TYPE_MX | TYPE_SRV) {
            return;
        }
        for target in &set.targets {
            let Some(&t) = self.index.get(&target[..]) else {
                continue;
            };
            for rtype in [TYPE_A, TYPE_AAAA] {
                if let Some(j) = self.nodes[t as usize].rrset(rtype) {
                    let item = Item {
                        section: Section::Additional,
                        owner: Owner::Node(t),
                        set: SetRef::At(t, j),
                    };
                    if !plan.items.iter().any(|it| it.set == item.set) {
                        plan.items.push(item);
                    }
                }
            }
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        name.len() >= self.origin.len()
            && name[name.len() - self.origin.len()..] == self.origin[..]
            && label_starts(name)
                .iter()
                .any(|&s| s as usize == name.len() - self.origin.len())
    }

    /// Encodes a plan into `buf`.
    fn encode(&self, q: &Question<'_>, plan: &Plan, buf: &mut Vec<u8>) -> Meta {
        let hi = 0x80 | if plan.aa { 0x04 } else { 0 } | (q.flags_hi & 0x01);
        let lo = plan.rcode | (q.flags_lo & 0x10);
        let mut w = Writer::new(
            buf,
            q.id,
            u16::from_be_bytes([hi, lo]),
            q.qname_wire,
            q.qtype,
            q.qclass,
        );
        let mut meta = Meta::new(w.buf.len());
        let mut additional = 0u16;
        for (section, count_at) in [
            (Section::Answer, 6),
            (Section::Authority, 8),
            (Section::Additional, 10),
        ] {
            if section == Section::Additional {
                meta.additional_at = w.buf.len();
            }
            for item in plan.items.iter().filter(|it| it.section == section) {
                let (set, owner_name): (&RRset, &[u8]) = match item.set {
                    SetRef::NegSoa => (&self.neg_soa, &self.origin),
                    SetRef::At(n, i) => (
                        &self.nodes[n as usize].rrsets[i as usize],
                        &self.nodes[n as usize].name,
                    ),
                };
                let owner_name = match item.owner {
                    Owner::Node(_) => owner_name,
                    Owner::Qname => q.qname_wire,
                    Owner::Target(n, i) => &self.nodes[n as usize].rrsets[i as usize].targets[0],
                };
                let mut n = 0;
                for tail in set.records() {
                    w.name(owner_name);
                    w.raw(tail);
                    n += 1;
                }
                w.add_count(count_at, n);
                if section == Section::Additional {
                    additional += n;
                    meta.push_cut(w.buf.len(), additional);
                }
            }
        }
        meta
    }
}

/// Copies a template and patches in the query's ID, flags, name spelling, type and class.
pub(crate) fn patch(t: &Template, q: &Question<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&t.bytes);
    buf[0..2].copy_from_slice(&q.id.to_be_bytes());
    buf[2] |= q.flags_hi & 0x01;
    buf[3] |= q.flags_lo & 0x10;
    let end = HEADER_LEN + q.qname_wire.len();
    buf[HEADER_LEN..end].copy_from_slice(q.qname_wire);
    buf[end..end + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[end + 2..end + 4].copy_from_slice(&q.qclass.to_be_bytes());
}

fn neg_soa() -> Item {
    Item {
        section: Section::Authority,
        owner: Owner::Node(0),
        set: SetRef::NegSoa,
    }
}

impl RRset {
    fn ttl(&self) -> Option<u32> {
        (self.tails.len() >= 8).then(|| {
            u32::from_be_bytes([self.tails[4], self.tails[5], self.tails[6], self.tails[7]])
        })
    }

    /// Appends a record (duplicates of a record already present are dropped, as RFC 2181 5
    /// says an RRset holds no duplicates).
    fn push(&mut self, rtype: u16, ttl: u32, rdata: &RData) {
        // A TXT string longer than a character-string's 255 bytes is split into several, as
        // Knot and BIND do; hickory keeps it whole and would refuse to encode it.
        let split;
        let rdata = match rdata {
            RData::TXT(t) if t.txt_data.iter().any(|s| s.len() > 255) => {
                split = RData::TXT(TXT::from_bytes(
                    t.txt_data.iter().flat_map(|s| s.chunks(255)).collect(),
                ));
                &split
            }
            other => other,
        };
        let mut wire = Vec::with_capacity(32);
        let mut enc = BinEncoder::new(&mut wire);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        // Encoding a record parsed from text cannot fail except on sizes that the parser
        // already refused; such a record is skipped rather than served broken.
        if rdata.emit(&mut enc).is_err() || wire.len() > u16::MAX as usize {
            return;
        }
        if self.records().any(|t| t[10..] == wire[..]) {
            return;
        }
        self.tails.extend_from_slice(&rtype.to_be_bytes());
        self.tails.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.tails.extend_from_slice(&ttl.to_be_bytes());
        self.tails
            .extend_from_slice(&(wire.len() as u16).to_be_bytes());
        self.tails.extend_from_slice(&wire);
        self.ends.push(self.tails.len() as u32);
        let target = match rdata {
            RData::NS(n) => Some(&n.0),
            RData::CNAME(n) => Some(&n.0),
            RData::MX(mx) => Some(&mx.exchange),
            RData::SRV(srv) => Some(&srv.target),
            _ => None,
        };
        if let Some(t) = target {
            self.targets.push(wire_lower(t));
        }
    }
}

/// A name in lowercase uncompressed wire form.
pub(crate) fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into()
}

/// Label start offsets of a wire name, the root's zero byte last.
pub(crate) fn label_starts(name: &[u8]) -> Vec<u8> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < name.len() {
        starts.push(at as u8);
        if name[at] == 0 {
            break;
        }
        at += 1 + name[at] as usize;
    }
    starts
}

fn labels(name: &[u8]) -> usize {
    label_starts(name).len()
}

/// Appends the question-echo part of `buf` (header + question) with `rcode`, for responses
/// that carry no records.
pub fn empty_response(
    buf: &mut Vec<u8>,
    packet: &[u8],
    question_end: Option<usize>,
    aa: bool,
    rc: u8,
) {
    buf.clear();
    let end = question_end.unwrap_or(HEADER_LEN);
    buf.extend_from_slice(&packet[..end]);
    // QR, the query's opcode and RD; RA/AD/Z clear; CD echoed.
    buf[2] = 0x80 | (packet[2] & 0x79) | if aa { 0x04 } else { 0 };
    buf[3] = (packet[3] & 0x10) | rc;
    let qd = u16::from(question_end.is_some());
    buf[4..6].copy_from_slice(&qd.to_be_bytes());
    buf[6..12].fill(0);
}

#[cfg(test)]
mod tests;
