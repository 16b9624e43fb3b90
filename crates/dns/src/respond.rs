//! From request bytes to response bytes: the checks before any zone is asked (opcode, EDNS
//! version, class, zone transfers, which zone), then the zone's answer, then size limits and
//! the OPT record. No allocation once the buffers have grown.

use crate::authority::{Context, Transport, ZoneSet};
use crate::query::{self, ClientSubnet, OPTION_ECS, ParseError, TYPE_OPT};
use crate::zone::{Meta, Plan, Question, empty_response, rcode};
use std::net::SocketAddr;

/// The UDP payload size this server advertises and never exceeds (the 2020 DNS flag day
/// value, also Knot's and NSD's default: it avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

const OPCODE_QUERY: u8 = 0;
const OPCODE_NOTIFY: u8 = 4;
const OPCODE_UPDATE: u8 = 5;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
/// Extended rcode BADVERS (16): 1 in the OPT's upper eight bits, 0 in the header.
const EXT_BADVERS: u8 = 1;

/// Per-worker scratch space and the last response.
#[derive(Default)]
pub struct Responder {
    plan: Plan,
    buf: Vec<u8>,
}

impl Responder {
    pub fn new() -> Self {
        Responder {
            plan: Plan::default(),
            buf: Vec::with_capacity(4096),
        }
    }

    /// The response to `packet`, or `None` when nothing may be sent (no header, or the
    /// packet is a response).
    pub fn respond(
        &mut self,
        zones: &ZoneSet,
        packet: &[u8],
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<&[u8]> {
        let req = match query::parse(packet) {
            Ok(req) => req,
            Err(ParseError::Drop) => return None,
            Err(ParseError::FormErr { question_end }) => {
                empty_response(&mut self.buf, packet, question_end, false, rcode::FORMERR);
                return Some(&self.buf);
            }
        };
        let edns = req.edns;
        let qend = Some(req.question_end);
        let mut ext_rcode = 0;
        let (limit, meta) = 'answer: {
            let limit = match (transport, edns) {
                (Transport::Tcp, _) => u16::MAX as usize,
                (Transport::Udp, None) => 512,
                (Transport::Udp, Some(e)) => e.payload.clamp(512, MAX_UDP_PAYLOAD) as usize,
            };
            let rc = match req.opcode() {
                OPCODE_QUERY => None,
                OPCODE_NOTIFY | OPCODE_UPDATE => Some(rcode::NOTAUTH),
                _ => Some(rcode::NOTIMP),
            };
            let rc = rc.or_else(|| {
                if edns.is_some_and(|e| e.version > 0) {
                    ext_rcode = EXT_BADVERS;
                    Some(rcode::NOERROR)
                } else if req.qclass != CLASS_IN && req.qclass != CLASS_ANY {
                    Some(rcode::REFUSED)
                } else if req.qtype == TYPE_AXFR && transport == Transport::Udp {
                    Some(rcode::NOTIMP)
                } else if req.qtype == TYPE_AXFR || req.qtype == TYPE_IXFR {
                    // Zone transfers are not offered.
                    Some(rcode::NOTAUTH)
                } else if req.qtype == TYPE_OPT {
                    Some(rcode::FORMERR)
                } else {
                    None
                }
            });
            if let Some(rc) = rc {
                empty_response(&mut self.buf, packet, qend, false, rc);
                break 'answer (limit, Meta::new(req.question_end));
            }
            let Some(zone) = zones.find(req.qname_lower(), req.label_starts()) else {
                empty_response(&mut self.buf, packet, qend, false, rcode::REFUSED);
                break 'answer (limit, Meta::new(req.question_end));
            };
            let q = Question {
                id: req.id,
                flags_hi: req.flags_hi,
                flags_lo: req.flags_lo,
                qname_wire: req.qname_wire(),
                qname_lower: req.qname_lower(),
                label_starts: req.label_starts(),
                qtype: req.qtype,
                qclass: req.qclass,
            };
            let ctx = Context {
                peer,
                transport,
                client_subnet: edns.and_then(|e| e.client_subnet),
            };
            let meta = zone.answer(&q, &ctx, &mut self.plan, &mut self.buf);
            (limit, meta)
        };
        match edns {
            None => meta.fit(&mut self.buf, limit),
            Some(e) => {
                // The Client Subnet option goes back only from a zone that tailors answers
                // (RFC 7871 7.2.1: family, source prefix and address as sent, the zone's scope).
                let ecs = e.client_subnet.zip(meta.ecs_scope);
                let ecs_len = ecs.map_or(0, |(cs, _)| 8 + (cs.source_prefix as usize).div_ceil(8));
                meta.fit(&mut self.buf, limit - OPT_LEN - ecs_len);
                let arcount = u16::from_be_bytes([self.buf[10], self.buf[11]]) + 1;
                self.buf[10..12].copy_from_slice(&arcount.to_be_bytes());
                let [p0, p1] = MAX_UDP_PAYLOAD.to_be_bytes();
                let do_bit = if e.dnssec_ok { 0x80 } else { 0 };
                let [r0, r1] = (ecs_len as u16).to_be_bytes();
                self.buf
                    .extend_from_slice(&[0, 0, 41, p0, p1, ext_rcode, 0, do_bit, 0, r0, r1]);
                if let Some((cs, scope)) = ecs {
                    write_client_subnet(&mut self.buf, &cs, scope);
                }
            }
        }
        Some(&self.buf)
    }
}

/// Appends an EDNS Client Subnet option: the query's family, source prefix and address bytes,
/// with `scope` as the SCOPE PREFIX-LENGTH.
fn write_client_subnet(buf: &mut Vec<u8>, cs: &ClientSubnet, scope: u8) {
    let bytes = (cs.source_prefix as usize).div_ceil(8);
    let (family, octets): (u16, [u8; 16]) = match cs.addr {
        std::net::IpAddr::V4(v4) => {
            let mut o = [0; 16];
            o[..4].copy_from_slice(&v4.octets());
            (1, o)
        }
        std::net::IpAddr::V6(v6) => (2, v6.octets()),
    };
    buf.extend_from_slice(&OPTION_ECS.to_be_bytes());
    buf.extend_from_slice(&(4 + bytes as u16).to_be_bytes());
    buf.extend_from_slice(&family.to_be_bytes());
    buf.extend_from_slice(&[cs.source_prefix, scope]);
    buf.extend_from_slice(&octets[..bytes]);
}
