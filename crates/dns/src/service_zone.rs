//! The service zone: DNS answers built from the service registry and the gateway's health
//! state, as one more [`Authority`].
//!
//! Names (ZONE is the configured origin, e.g. `svc.gatehouse.`):
//! - `SERVICE.ZONE` A/AAAA: the serving instances' addresses;
//! - `_SERVICE._tcp.ZONE` SRV: priority 0, the instance's weight and port, target
//!   `INSTANCE.SERVICE.ZONE`, whose A/AAAA go in additional;
//! - `INSTANCE.SERVICE.ZONE` A/AAAA: one serving instance;
//! - the apex: a synthesized SOA and NS (`ns.ZONE`, with the DNS listener's address when it
//!   is a specific one). `ns` is therefore not available as a service name here.
//!
//! *Serving* instances are the healthy ones; when a service has instances but none is healthy,
//! all of them are served (fail open, as Route 53 does and as Envoy's panic threshold does for
//! traffic): a health checker that is itself cut off must not take every service out of DNS,
//! and a client given a possibly-dead address is no worse off than one given none. Instances
//! whose lease ran out are gone from the registry and never served.
//!
//! Nothing is decided per query beyond picking a precomputed response: on every membership or
//! health change the caller builds a new zone from a [`ServiceSnapshot`], which encodes, for
//! each answer, one complete response per rotation of its records (the first record moves by
//! one each time), and per region one such set with only that region's instances. A query
//! looks the name up, places the client in a region (EDNS Client Subnet or peer address, only
//! for answers that differ by region), takes the next rotation from an atomic counter (for the
//! `weighted` policy, from a precomputed smooth weighted round-robin sequence, so an instance
//! comes first in proportion to its weight), and patches ID, flags and the name's spelling.

use crate::authority::{Authority, Context};
use crate::fasthash::FastMap;
use crate::geo::RegionTable;
use crate::wire::Writer;
use crate::zone::{Meta, Plan, Question, TYPE_ANY, Template, patch, rcode};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// QR and AA: every answer here is authoritative.
const FLAGS: u16 = 0x8400;
/// Weighted sequences are scaled to about this many slots (weights go up to 10000).
const WEIGHT_SLOTS: u64 = 256;
/// Most precomputed orders of one answer: n records need n rotations for every record to come
/// first, but n responses of n records grow as n squared; past this, rotations start at evenly
/// spaced records (answers that large exceed UDP limits and go over TCP anyway).
const MAX_ROTATIONS: usize = 64;

/// How the records of an answer are ordered from one response to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Each response starts one record further along.
    #[default]
    RoundRobin,
    /// Each instance comes first in a share of responses proportional to its weight.
    Weighted,
}

/// What the zone is built with (from `[dns.services]` and `[regions]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceZoneSettings {
    /// The origin as text ("svc.gatehouse.").
    pub origin: String,
    /// TTL of answers, and of the SOA and negative answers, in seconds.
    pub ttl: u32,
    pub policy: Policy,
    pub overrides: Vec<ServiceOverride>,
    /// Region names with their networks (address, prefix length).
    pub regions: Vec<(String, Vec<(IpAddr, u8)>)>,
    /// Addresses of `ns.ZONE` (the DNS listener's, when specific).
    pub nameserver_addrs: Vec<IpAddr>,
}

/// Per-service TTL and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOverride {
    pub service: String,
    pub ttl: Option<u32>,
    pub policy: Option<Policy>,
}

/// The registry with health, as plain data: compared to decide whether to rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSnapshot {
    pub services: Vec<ServiceRecords>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    /// One lowercase DNS label (the registry enforces it; others are skipped).
    pub name: String,
    pub instances: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub region: Option<String>,
    pub healthy: bool,
}

/// A compiled service zone.
pub struct ServiceZone {
    origin: Box<[u8]>,
    regions: RegionTable,
    nodes: FastMap<Node>,
    /// The SOA record after its owner (type, class, TTL, length, data), for NXDOMAIN.
    neg_soa: Box<[u8]>,
}

/// One name's responses.
struct Node {
    answers: Vec<(u16, Answer)>,
    nodata: Template,
}

/// The responses for one name and type.
struct Answer {
    /// `sets[0]` has every serving instance; the others one region's.
    sets: Vec<Rotation>,
    /// Region index -> index in `sets` (0: the region has no instance of its own). Empty when
    /// the answer is the same everywhere, so such queries skip placing the client.
    by_region: Box<[u16]>,
}

/// The precomputed orders of one record set.
struct Rotation {
    templates: Vec<Template>,
    /// Which template each successive response uses.
    order: Box<[u16]>,
    next: AtomicU32,
}

impl Rotation {
    fn pick(&self) -> &Template {
        // Relaxed: responses need only spread, not a global order.
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        &self.templates[self.order[i % self.order.len()] as usize]
    }
}

/// One record of an answer: its tail, its additional records (owner, tail), its weight.
struct Rec {
    tail: Vec<u8>,
    glue: Vec<(Vec<u8>, Vec<u8>)>,
    weight: u32,
}

/// A serving instance with its DNS name.
struct Member<'a> {
    endpoint: &'a Endpoint,
    /// `LABEL.SERVICE.ZONE`, lowercase wire form.
    name: Vec<u8>,
}

impl ServiceZone {
    /// Builds the zone; `serial` goes in the SOA (the caller bumps it per build).
    pub fn build(
        settings: &ServiceZoneSettings,
        snapshot: &ServiceSnapshot,
        serial: u32,
    ) -> Result<ServiceZone, String> {
        let origin = origin_wire(&settings.origin)?;
        let ttl = settings.ttl;
        let ns_name = join(b"ns", &origin);
        let mut soa = Vec::new();
        soa.extend_from_slice(&ns_name);
        soa.extend_from_slice(&join(b"hostmaster", &origin));
        // Refresh, retry and expire matter only to secondaries, which this zone has none of;
        // the minimum is the negative-caching TTL (RFC 2308), kept as short as the answers so
        // a service registered a moment after a miss is found as soon as a positive would be.
        for v in [serial, 3600, 600, 86400, ttl] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        let mut zone = ServiceZone {
            neg_soa: tail(TYPE_SOA, ttl, &soa).into(),
            origin,
            regions: RegionTable::new(
                &settings
                    .regions
                    .iter()
                    .map(|(_, nets)| nets.clone())
                    .collect::<Vec<_>>(),
            ),
            nodes: FastMap::default(),
        };
        let mut buf = Vec::with_capacity(512);
        let origin = zone.origin.clone();

        // The apex: SOA, NS with the name server's addresses as glue.
        let ns_glue: Vec<(Vec<u8>, Vec<u8>)> = settings
            .nameserver_addrs
            .iter()
            .map(|&a| (ns_name.clone(), addr_tail(a, ttl)))
            .collect();
        let soa_t = zone.encode(
            &mut buf,
            &origin,
            TYPE_SOA,
            &[tail(TYPE_SOA, ttl, &soa)],
            &[],
        );
        let ns_t = zone.encode(
            &mut buf,
            &origin,
            TYPE_NS,
            &[tail(TYPE_NS, ttl, &ns_name)],
            &ns_glue,
        );
        zone.add(
            &mut buf,
            &origin,
            vec![(TYPE_SOA, fixed(soa_t)), (TYPE_NS, fixed(ns_t))],
        );
        let mut ns_answers = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            let records: Vec<Vec<u8>> = settings
                .nameserver_addrs
                .iter()
                .filter(|a| addr_type(**a) == qtype)
                .map(|&a| addr_tail(a, ttl))
                .collect();
            if !records.is_empty() {
                let t = zone.encode(&mut buf, &ns_name, qtype, &records, &[]);
                ns_answers.push((qtype, fixed(t)));
            }
        }
        zone.add(&mut buf, &ns_name, ns_answers);
        // `_tcp.ZONE` exists (an empty non-terminal above the SRV names): NODATA, not NXDOMAIN.
        zone.add(&mut buf, &join(b"_tcp", &zone.origin.clone()), Vec::new());

        let region_names: Vec<&str> = settings.regions.iter().map(|(n, _)| n.as_str()).collect();
        for service in &snapshot.services {
            zone.add_service(&mut buf, settings, service, &region_names);
        }
        Ok(zone)
    }

    fn add_service(
        &mut self,
        buf: &mut Vec<u8>,
        settings: &ServiceZoneSettings,
        service: &ServiceRecords,
        regions: &[&str],
    ) {
        let label = service.name.as_bytes();
        let valid = (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !valid || label == b"ns" || service.instances.is_empty() {
            return;
        }
        let over = settings
            .overrides
            .iter()
            .find(|o| o.service == service.name);
        let ttl = over.and_then(|o| o.ttl).unwrap_or(settings.ttl);
        let policy = over.and_then(|o| o.policy).unwrap_or(settings.policy);
        let name = join(label, &self.origin);
        let srv_name = join(&[b"_", label].concat(), &join(b"_tcp", &self.origin));
        if srv_name.len() > 255 {
            return;
        }
        let any_healthy = service.instances.iter().any(|e| e.healthy);
        let mut members: Vec<Member> = Vec::new();
        for endpoint in service
            .instances
            .iter()
            .filter(|e| e.healthy || !any_healthy)
        {
            let base = instance_label(&endpoint.id);
            let mut label = base.clone();
            let mut n = 1;
            while members
                .iter()
                .any(|m| m.name[1..=m.name[0] as usize] == *label.as_bytes())
            {
                n += 1;
                label = format!("{}-{n}", &base[..base.len().min(56)]);
            }
            let member_name = join(label.as_bytes(), &name);
            if member_name.len() <= 255 {
                members.push(Member {
                    endpoint,
                    name: member_name,
                });
            }
        }
        if members.is_empty() {
            return;
        }
        let in_region = |m: &Member, r: usize| m.endpoint.region.as_deref() == Some(regions[r]);

        let mut answers = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            let of_type: Vec<&Member> = members
                .iter()
                .filter(|m| addr_type(m.endpoint.addr) == qtype)
                .collect();
            // Instances that share an address (one host, several ports) are one record: an
            // RRset holds no duplicates (RFC 2181 5). Their weights add up.
            let records = |ms: &[&Member]| -> Vec<Rec> {
                let mut recs: Vec<(IpAddr, Rec)> = Vec::new();
                for m in ms {
                    let addr = m.endpoint.addr.to_canonical();
                    match recs.iter_mut().find(|(a, _)| *a == addr) {
                        Some((_, r)) => r.weight = r.weight.saturating_add(m.endpoint.weight),
                        None => recs.push((
                            addr,
                            Rec {
                                tail: addr_tail(addr, ttl),
                                glue: Vec::new(),
                                weight: m.endpoint.weight,
                            },
                        )),
                    }
                }
                recs.into_iter().map(|(_, r)| r).collect()
            };
            if let Some(a) = self.answer(
                buf,
                &name,
                qtype,
                &of_type,
                regions.len(),
                in_region,
                policy,
                &records,
            ) {
                answers.push((qtype, a));
            }
        }
        self.add(buf, &name, answers);

        let all: Vec<&Member> = members.iter().collect();
        let srv = |ms: &[&Member]| -> Vec<Rec> {
            ms.iter()
                .map(|m| {
                    let e = m.endpoint;
                    let mut data = Vec::with_capacity(6 + m.name.len());
                    data.extend_from_slice(&0u16.to_be_bytes());
                    data.extend_from_slice(
                        &(e.weight.min(u32::from(u16::MAX)) as u16).to_be_bytes(),
                    );
                    data.extend_from_slice(&e.port.to_be_bytes());
                    data.extend_from_slice(&m.name);
                    let glue = vec![(m.name.clone(), addr_tail(e.addr, ttl))];
                    Rec {
                        tail: tail(TYPE_SRV, ttl, &data),
                        glue,
                        weight: e.weight,
                    }
                })
                .collect()
        };
        let srv_answer = self.answer(
            buf,
            &srv_name,
            TYPE_SRV,
            &all,
            regions.len(),
            in_region,
            policy,
            &srv,
        );
        self.add(
            buf,
            &srv_name,
            srv_answer.map(|a| (TYPE_SRV, a)).into_iter().collect(),
        );

        for m in &members {
            let qtype = addr_type(m.endpoint.addr);
            let t = self.encode(buf, &m.name, qtype, &[addr_tail(m.endpoint.addr, ttl)], &[]);
            self.add(buf, &m.name, vec![(qtype, fixed(t))]);
        }
    }

    /// The answer for `members` (all of them, and per region those in it), or None when
    /// there are none. `records` turns members into records.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        buf: &mut Vec<u8>,
        owner: &[u8],
        qtype: u16,
        members: &[&Member],
        regions: usize,
        in_region: impl Fn(&Member, usize) -> bool,
        policy: Policy,
        records: &dyn Fn(&[&Member]) -> Vec<Rec>,
    ) -> Option<Answer> {
        if members.is_empty() {
            return None;
        }
        let mut sets = vec![self.rotation(buf, owner, qtype, &records(members), policy)];
        let mut by_region = vec![0u16; regions];
        for (r, slot) in by_region.iter_mut().enumerate() {
            let local: Vec<&Member> = members
                .iter()
                .copied()
                .filter(|m| in_region(m, r))
                .collect();
            if !local.is_empty() {
                *slot = sets.len() as u16;
                sets.push(self.rotation(buf, owner, qtype, &records(&local), policy));
            }
        }
        let regional = by_region.iter().any(|&s| s != 0);
        Some(Answer {
            sets,
            by_region: if regional {
                by_region.into()
            } else {
                Box::new([])
            },
        })
    }

    /// One response per rotation of `records` and the order to use them in.
    fn rotation(
        &self,
        buf: &mut Vec<u8>,
        owner: &[u8],
        qtype: u16,
        records: &[Rec],
        policy: Policy,
    ) -> Rotation {
        let n = records.len();
        // Rotation k starts at record starts[k]: every record when there are few, else
        // MAX_ROTATIONS evenly spaced starts, so memory stays linear in the answer's size.
        let rotations = n.min(MAX_ROTATIONS);
        let starts: Vec<usize> = (0..rotations).map(|k| k * n / rotations).collect();
        let templates = starts
            .iter()
            .map(|&k| {
                let tails: Vec<Vec<u8>> =
                    (0..n).map(|j| records[(k + j) % n].tail.clone()).collect();
                let glue: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                    .flat_map(|j| records[(k + j) % n].glue.clone())
                    .collect();
                self.encode(buf, owner, qtype, &tails, &glue)
            })
            .collect();
        let order: Vec<u16> = match policy {
            Policy::RoundRobin => (0..rotations as u16).collect(),
            // The instance the sequence picks, as the rotation starting at or before it.
            Policy::Weighted => {
                weighted_order(&records.iter().map(|r| r.weight).collect::<Vec<_>>())
                    .into_iter()
                    .map(|i| (starts.partition_point(|&s| s <= i as usize) - 1) as u16)
                    .collect()
            }
        };
        Rotation {
            templates,
            order: order.into(),
            next: AtomicU32::new(0),
        }
    }

    /// Encodes a response to (`owner`, `qtype`): `tails` in answer (or, when empty, the SOA in
    /// authority: NODATA), then `glue` (owner, tail) in additional, each its own cut.
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        owner: &[u8],
        qtype: u16,
        tails: &[Vec<u8>],
        glue: &[(Vec<u8>, Vec<u8>)],
    ) -> Template {
        let mut w = Writer::new(buf, 0, FLAGS, owner, qtype, CLASS_IN);
        let mut meta = Meta::new(w.buf.len());
        if tails.is_empty() {
            w.name(&self.origin);
            w.raw(&self.neg_soa);
            w.add_count(8, 1);
        }
        for t in tails {
            w.name(owner);
            w.raw(t);
        }
        w.add_count(6, tails.len() as u16);
        meta.additional_at = w.buf.len();
        for (i, (name, t)) in glue.iter().enumerate() {
            w.name(name);
            w.raw(t);
            w.add_count(10, 1);
            meta.push_cut(w.buf.len(), i as u16 + 1);
        }
        Template {
            bytes: w.buf.as_slice().into(),
            meta,
        }
    }

    fn add(&mut self, buf: &mut Vec<u8>, name: &[u8], answers: Vec<(u16, Answer)>) {
        let nodata = self.encode(buf, name, 0, &[], &[]);
        self.nodes.insert(name.into(), Node { answers, nodata });
    }

    fn nxdomain(&self, q: &Question<'_>, buf: &mut Vec<u8>) -> Meta {
        let hi = 0x84 | (q.flags_hi & 0x01);
        let lo = rcode::NXDOMAIN | (q.flags_lo & 0x10);
        let flags = u16::from_be_bytes([hi, lo]);
        let mut w = Writer::new(buf, q.id, flags, q.qname_wire, q.qtype, q.qclass);
        let meta = Meta::new(w.buf.len());
        w.name(&self.origin);
        w.raw(&self.neg_soa);
        w.add_count(8, 1);
        meta
    }

    /// Number of names served (for logs).
    pub fn names(&self) -> usize {
        self.nodes.len()
    }
}

impl Authority for ServiceZone {
    fn origin(&self) -> &[u8] {
        &self.origin
    }

    fn answer(&self, q: &Question<'_>, ctx: &Context, _plan: &mut Plan, buf: &mut Vec<u8>) -> Meta {
        let mut meta = 'meta: {
            let Some(node) = self.nodes.get(q.qname_lower) else {
                break 'meta self.nxdomain(q, buf);
            };
            // ANY gets one RRset (RFC 8482): the first this name holds.
            let found = if q.qtype == TYPE_ANY {
                node.answers.first()
            } else {
                node.answers.iter().find(|(t, _)| *t == q.qtype)
            };
            let Some((_, answer)) = found else {
                patch(&node.nodata, q, buf);
                break 'meta node.nodata.meta;
            };
            let (set, scope) = if answer.by_region.is_empty() {
                (0, 0)
            } else {
                let p = self
                    .regions
                    .place(ctx.peer.ip(), ctx.client_subnet.as_ref());
                let set = p.region.map_or(0, |r| answer.by_region[r as usize]);
                (set, p.scope)
            };
            let t = answer.sets[set as usize].pick();
            patch(t, q, buf);
            let mut meta = t.meta;
            meta.ecs_scope = Some(scope);
            meta
        };
        // Echo the Client Subnet option whenever it was sent: scope 0 says "the same for
        // everyone", the placement's scope says how far a regional answer holds (RFC 7871 7.2.1).
        meta.ecs_scope = ctx.client_subnet.map(|_| meta.ecs_scope.unwrap_or(0));
        meta
    }
}

/// A fixed answer: one template.
fn fixed(t: Template) -> Answer {
    Answer {
        sets: vec![Rotation {
            templates: vec![t],
            order: Box::new([0]),
            next: AtomicU32::new(0),
        }],
        by_region: Box::new([]),
    }
}

/// Smooth weighted round robin (as nginx): a sequence of indexes in which each appears in
/// proportion to its weight, spread out rather than in runs.
fn weighted_order(weights: &[u32]) -> Vec<u16> {
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scaled: Vec<i64> = weights
        .iter()
        .map(|&w| {
            let w = u64::from(w.max(1));
            if total > WEIGHT_SLOTS {
                (w * WEIGHT_SLOTS / total).max(1) as i64
            } else {
                w as i64
            }
        })
        .collect();
    let sum: i64 = scaled.iter().sum();
    let mut current = vec![0i64; scaled.len()];
    let mut order = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..scaled.len() {
            current[i] += scaled[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        order.push(best as u16);
    }
    order
}

/// A DNS label for an instance id (letters, digits, `-_.:`, up to 128): lowercased, `.` and
/// `:` as `-`, at most 63 bytes. Collisions are numbered by the caller.
fn instance_label(id: &str) -> String {
    let mut label: String = id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    if label.is_empty() {
        label.push('i');
    }
    label
}

/// "svc.gatehouse." (trailing dot optional) as lowercase wire form.
fn origin_wire(text: &str) -> Result<Box<[u8]>, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    let mut out = Vec::new();
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 || !label.is_ascii() {
                return Err(format!("{text:?} is not a domain name"));
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    if out.len() > 200 {
        return Err(format!(
            "{text:?} is too long for a zone origin (names below it need room)"
        ));
    }
    Ok(out.into())
}

/// `label` prepended to a wire name.
fn join(label: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + label.len() + name.len());
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.extend_from_slice(name);
    out
}

/// A record after its owner: type, class IN, TTL, data length, data.
fn tail(rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + data.len());
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn addr_type(addr: IpAddr) -> u16 {
    if addr.to_canonical().is_ipv4() {
        TYPE_A
    } else {
        TYPE_AAAA
    }
}

fn addr_tail(addr: IpAddr, ttl: u32) -> Vec<u8> {
    match addr.to_canonical() {
        IpAddr::V4(v4) => tail(TYPE_A, ttl, &v4.octets()),
        IpAddr::V6(v6) => tail(TYPE_AAAA, ttl, &v6.octets()),
    }
}

#[cfg(test)]
mod tests;
