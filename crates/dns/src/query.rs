//! Request parsing: the header, the one question (its name lowercased into a fixed buffer, no
//! allocation), and the additional section's OPT record (EDNS payload size, version, DO bit and
//! EDNS Client Subnet).
//!
//! The outcome decides what the server may send back: [`ParseError::Drop`] when there is not
//! even a header (or the packet is itself a response, which must never be answered: two servers
//! could bounce it forever), [`ParseError::FormErr`] for a readable header with a bad body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Fixed DNS header length.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// RR type of the EDNS pseudo-record.
pub const TYPE_OPT: u16 = 41;
/// EDNS option code of Client Subnet (RFC 7871).
pub const OPTION_ECS: u16 = 8;

/// Why a packet gets no normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not even a header, or a response: send nothing.
    Drop,
    /// A header but a malformed body: FORMERR. `question_end` is where the question ends when
    /// it was readable (so the FORMERR can echo it), else `None`.
    FormErr { question_end: Option<usize> },
}

/// EDNS Client Subnet as the client sent it (RFC 7871 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The address, with the bits past `source_prefix` zero.
    pub addr: IpAddr,
    pub source_prefix: u8,
    pub scope_prefix: u8,
}

/// The request's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The client's UDP payload size (values below 512 count as 512, RFC 6891 6.2.5).
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Parsed now so a zone that answers per client network (the service zone) can use it.
    pub client_subnet: Option<ClientSubnet>,
}

/// A parsed query. Borrowed from the packet; the lowercase name lives in the struct.
pub struct Request<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    /// Header byte 2: QR, opcode, AA, TC, RD.
    pub flags_hi: u8,
    /// Header byte 3: RA, Z, AD, CD, rcode.
    pub flags_lo: u8,
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question section (name, type, class) in `packet`.
    pub question_end: usize,
    pub edns: Option<Edns>,
    lower: [u8; MAX_NAME],
    lower_len: u8,
    /// Offsets of each label start in the name (the last one is the root's zero byte).
    label_starts: [u8; 128],
    label_count: u8,
}

impl Request<'_> {
    pub fn opcode(&self) -> u8 {
        (self.flags_hi >> 3) & 0x0f
    }

    /// The question name in wire form, lowercased.
    pub fn qname_lower(&self) -> &[u8] {
        &self.lower[..self.lower_len as usize]
    }

    /// The question name in wire form as the client wrote it (its case is echoed back).
    pub fn qname_wire(&self) -> &[u8] {
        &self.packet[HEADER_LEN..HEADER_LEN + self.lower_len as usize]
    }

    /// Start offsets of the labels of the name, from the full name down to the root.
    pub fn label_starts(&self) -> &[u8] {
        &self.label_starts[..self.label_count as usize]
    }
}

/// Parses a query packet.
pub fn parse(packet: &[u8]) -> Result<Request<'_>, ParseError> {
    if packet.len() < HEADER_LEN {
        return Err(ParseError::Drop);
    }
    let flags_hi = packet[2];
    if flags_hi & 0x80 != 0 {
        return Err(ParseError::Drop);
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let no_question = ParseError::FormErr { question_end: None };
    if qd != 1 {
        return Err(no_question);
    }
    let mut req = Request {
        packet,
        id: count(0),
        flags_hi,
        flags_lo: packet[3],
        qtype: 0,
        qclass: 0,
        question_end: 0,
        edns: None,
        lower: [0; MAX_NAME],
        lower_len: 0,
        label_starts: [0; 128],
        label_count: 0,
    };
    let mut pos = HEADER_LEN;
    loop {
        let len = *packet.get(pos).ok_or(no_question)? as usize;
        // Compression pointers and extended label types have no place in a question.
        if len > 63 {
            return Err(no_question);
        }
        let at = pos - HEADER_LEN;
        if at + 1 + len > MAX_NAME {
            return Err(no_question);
        }
        let label = packet.get(pos + 1..pos + 1 + len).ok_or(no_question)?;
        req.label_starts[req.label_count as usize] = at as u8;
        req.label_count += 1;
        req.lower[at] = len as u8;
        for (dst, src) in req.lower[at + 1..at + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    req.lower_len = (pos - HEADER_LEN) as u8;
    let tail = packet.get(pos..pos + 4).ok_or(no_question)?;
    req.qtype = u16::from_be_bytes([tail[0], tail[1]]);
    req.qclass = u16::from_be_bytes([tail[2], tail[3]]);
    pos += 4;
    req.question_end = pos;
    let bad = ParseError::FormErr {
        question_end: Some(pos),
    };

    // Answer and authority records in a query are unusual but legal: skip them.
    for _ in 0..(an as u32 + ns as u32) {
        pos = skip_record(packet, pos).ok_or(bad)?.0;
    }
    for _ in 0..ar {
        let (next, rtype, rdata_at) = skip_record(packet, pos).ok_or(bad)?;
        if rtype == TYPE_OPT {
            // One OPT, owned by the root (RFC 6891 6.1.1).
            if req.edns.is_some() || packet[pos] != 0 {
                return Err(bad);
            }
            req.edns = Some(parse_opt(packet, pos + 1, rdata_at, next).ok_or(bad)?);
        }
        pos = next;
    }
    if pos != packet.len() {
        return Err(bad);
    }
    Ok(req)
}

/// Skips one resource record at `pos`; returns (end, type, rdata start).
fn skip_record(packet: &[u8], mut pos: usize) -> Option<(usize, u16, usize)> {
    pos = skip_name(packet, pos)?;
    let fixed = packet.get(pos..pos + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    let rdata_at = pos + 10;
    let end = rdata_at + rdlen;
    (end <= packet.len()).then_some((end, rtype, rdata_at))
}

/// Skips a possibly compressed name (a pointer ends it; it is not followed).
fn skip_name(packet: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *packet.get(pos)? as usize;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + len,
            0xc0..=0xff => {
                packet.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
    None
}

/// Parses the OPT record's fixed part (at `fixed`, after the root owner) and options.
fn parse_opt(packet: &[u8], fixed: usize, rdata_at: usize, end: usize) -> Option<Edns> {
    let f = &packet[fixed..fixed + 8];
    let payload = u16::from_be_bytes([f[2], f[3]]).max(512);
    let version = f[5];
    let dnssec_ok = f[6] & 0x80 != 0;
    let mut client_subnet = None;
    let mut pos = rdata_at;
    while pos < end {
        let head = packet.get(pos..pos + 4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let data = packet.get(pos + 4..pos + 4 + len)?;
        if pos + 4 + len > end {
            return None;
        }
        if code == OPTION_ECS {
            if client_subnet.is_some() {
                return None;
            }
            client_subnet = Some(parse_ecs(data)?);
        }
        pos += 4 + len;
    }
    Some(Edns {
        payload,
        version,
        dnssec_ok,
        client_subnet,
    })
}

/// RFC 7871 6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS cut to the prefix.
/// A malformed triple is a FORMERR (7.1.2).
fn parse_ecs(data: &[u8]) -> Option<ClientSubnet> {
    if data.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([data[0], data[1]]);
    let (source_prefix, scope_prefix) = (data[2], data[3]);
    let addr = &data[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max || scope_prefix > max {
        return None;
    }
    // ADDRESS holds exactly the bytes the prefix needs, with the bits past it zero.
    if addr.len() != (source_prefix as usize).div_ceil(8) {
        return None;
    }
    if let Some(last) = addr.last() {
        let used = source_prefix % 8;
        if used != 0 && last & (0xff >> used) != 0 {
            return None;
        }
    }
    let mut full = [0u8; 16];
    full[..addr.len()].copy_from_slice(addr);
    let addr = if family == 1 {
        IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(full))
    };
    Some(ClientSubnet {
        addr,
        source_prefix,
        scope_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (dotted, no trailing dot) of type `qtype`.
    pub(crate) fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    fn with_opt(mut p: Vec<u8>, version: u8, options: &[u8]) -> Vec<u8> {
        p[11] += 1;
        p.push(0);
        p.extend_from_slice(&TYPE_OPT.to_be_bytes());
        p.extend_from_slice(&4096u16.to_be_bytes());
        p.extend_from_slice(&[0, version, 0x80, 0]);
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn parses_question_and_lowercases_the_name() {
        let p = query("WwW.Example.TEST", 1);
        let r = parse(&p).unwrap();
        assert_eq!(r.qname_lower(), b"\x03www\x07example\x04test\x00");
        assert_eq!(r.qname_wire(), b"\x03WwW\x07Example\x04TEST\x00");
        assert_eq!(r.label_starts(), &[0, 4, 12, 17]);
        assert_eq!((r.qtype, r.qclass, r.id), (1, 1, 0x1234));
        assert!(r.edns.is_none());
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        assert_eq!(parse(&[0; 11]).err(), Some(ParseError::Drop));
        let mut p = query("a.test", 1);
        p[2] |= 0x80;
        assert_eq!(parse(&p).err(), Some(ParseError::Drop));
    }

    #[test]
    fn bad_bodies_are_formerr() {
        let p = query("a.test", 1);
        // Header only: no question.
        assert_eq!(
            parse(&p[..12]).err(),
            Some(ParseError::FormErr { question_end: None })
        );
        // Two questions claimed.
        let mut two = p.clone();
        two[5] = 2;
        assert!(matches!(parse(&two), Err(ParseError::FormErr { .. })));
        // Trailing garbage after a good question: echo the question.
        let mut trailing = p.clone();
        trailing.push(0);
        assert_eq!(
            parse(&trailing).err(),
            Some(ParseError::FormErr {
                question_end: Some(p.len())
            })
        );
        // A compression pointer in the question.
        let mut ptr = p[..12].to_vec();
        ptr.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(matches!(parse(&ptr), Err(ParseError::FormErr { .. })));
    }

    #[test]
    fn reads_edns_and_client_subnet() {
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
        let p = with_opt(query("a.test", 1), 0, &ecs);
        let edns = parse(&p).unwrap().edns.unwrap();
        assert_eq!(edns.payload, 4096);
        assert!(edns.dnssec_ok);
        let cs = edns.client_subnet.unwrap();
        assert_eq!(cs.addr, "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(cs.source_prefix, 24);
    }

    #[test]
    fn malformed_client_subnet_and_double_opt_are_formerr() {
        // /24 with four address bytes.
        let ecs = [0, 8, 0, 8, 0, 1, 24, 0, 192, 0, 2, 1];
        let p = with_opt(query("a.test", 1), 0, &ecs);
        assert!(matches!(parse(&p), Err(ParseError::FormErr { .. })));
        // /23 with a bit set past the prefix.
        let ecs = [0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 3];
        let p = with_opt(query("a.test", 1), 0, &ecs);
        assert!(matches!(parse(&p), Err(ParseError::FormErr { .. })));
        let once = with_opt(query("a.test", 1), 0, &[]);
        let opt = once[once.len() - 11..].to_vec();
        let mut twice = once.clone();
        twice[11] = 2;
        twice.extend_from_slice(&opt);
        assert!(matches!(parse(&twice), Err(ParseError::FormErr { .. })));
    }
}
