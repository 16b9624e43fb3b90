//! Helpers for the DNS tests: query packets built byte by byte, a real UDP/TCP client, response
//! summaries parsed with hickory-proto, and Knot DNS as a child process.
#![allow(dead_code)] // each test file uses a different subset

use hickory_proto::op::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/example.test.zone");

/// One query to send.
#[derive(Clone, Debug)]
pub struct Q {
    pub name: String,
    pub qtype: u16,
    pub class: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// (payload, version, DO, options)
    pub edns: Option<(u16, u8, bool, Vec<u8>)>,
    pub tcp: bool,
}

impl Q {
    pub fn new(name: &str, qtype: u16) -> Q {
        Q {
            name: name.into(),
            qtype,
            class: 1,
            opcode: 0,
            rd: false,
            cd: false,
            edns: None,
            tcp: false,
        }
    }
    pub fn edns(mut self, payload: u16) -> Q {
        self.edns = Some((payload, 0, false, Vec::new()));
        self
    }
    pub fn tcp(mut self) -> Q {
        self.tcp = true;
        self
    }

    pub fn packet(&self, id: u16) -> Vec<u8> {
        let hi = (self.opcode << 3) | u8::from(self.rd);
        let lo = if self.cd { 0x10 } else { 0 };
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[hi, lo, 0, 1, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&wire(&self.name));
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.class.to_be_bytes());
        if let Some((payload, version, dnssec_ok, options)) = &self.edns {
            p[11] = 1;
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.extend_from_slice(&[0, *version, if *dnssec_ok { 0x80 } else { 0 }, 0]);
            p.extend_from_slice(&(options.len() as u16).to_be_bytes());
            p.extend_from_slice(options);
        }
        p
    }
}

pub fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// Sends one packet; `None` when no answer came within a second (UDP) or the connection
/// closed without one (TCP).
pub fn exchange(addr: SocketAddr, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
    if tcp {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = (packet.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(packet);
        s.write_all(&out).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut resp = vec![0; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut resp).ok()?;
        return Some(resp);
    }
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.send_to(packet, addr).ok()?;
    let mut buf = vec![0; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// What two servers' responses must agree on.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: u16,
    /// Header bytes 2 and 3: QR, opcode, AA, TC, RD, RA, AD, CD, rcode.
    pub flags: [u8; 2],
    pub counts: [u16; 4],
    /// The question section's bytes exactly (the client's case preserved).
    pub question: Vec<u8>,
    /// Each section's records as text (lowercased, sorted: RRset order carries no meaning).
    pub sections: [Vec<String>; 3],
    /// OPT: payload, version, extended rcode, DO.
    pub edns: Option<(u16, u8, u8, bool)>,
}

pub fn summarize(resp: &[u8]) -> Summary {
    assert!(resp.len() >= 12, "short response {resp:?}");
    let counts = [4, 6, 8, 10].map(|i| u16::from_be_bytes([resp[i], resp[i + 1]]));
    let mut question = Vec::new();
    if counts[0] == 1 {
        let mut at = 12;
        while resp[at] != 0 {
            at += 1 + resp[at] as usize;
        }
        question = resp[12..at + 5].to_vec();
    }
    let (sections, edns) = match Message::from_vec(resp) {
        Ok(m) => {
            let text = |rs: &[hickory_proto::rr::Record]| {
                let mut v: Vec<String> = rs.iter().map(|r| r.to_string().to_lowercase()).collect();
                v.sort();
                v
            };
            (
                [text(&m.answers), text(&m.authorities), text(&m.additionals)],
                m.edns.as_ref().map(|e| {
                    (
                        e.max_payload(),
                        e.version(),
                        e.rcode_high(),
                        e.flags().dnssec_ok,
                    )
                }),
            )
        }
        Err(e) => ([vec![format!("unparseable: {e}")], vec![], vec![]], None),
    };
    Summary {
        id: u16::from_be_bytes([resp[0], resp[1]]),
        flags: [resp[2], resp[3]],
        counts,
        question,
        sections,
        edns,
    }
}

pub use gatehouse_test_support::temp_dir;

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for UDP and TCP");
}

/// Where a program is installed, if it is.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Knot DNS serving one zone file on a free loopback port, from its own temporary config
/// and storage directories; stopped on drop.
pub struct Knot {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Knot {
    /// `None` (after saying why) when knotd is not installed.
    pub fn start(origin: &str, zone: &Path) -> Option<Knot> {
        let Some(knotd) = which("knotd") else {
            eprintln!(
                "SKIPPED: knotd is not installed (apt-get install knot); .ci/run installs it"
            );
            return None;
        };
        let dir = temp_dir("gatehouse-knot");
        std::fs::create_dir_all(dir.join("db")).expect("db dir");
        let zone_copy = dir.join("zone");
        std::fs::copy(zone, &zone_copy).expect("copy zone");
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "server:\n  rundir: \"{d}\"\n  pidfile: \"{d}/knot.pid\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n  identity: \"\"\n  version: \"\"\n  nsid: \"\"\n  answer-rotation: off\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n  storage: \"{d}/db\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\nzone:\n  - domain: {origin}\n    file: \"{z}\"\n",
                d = dir.display(),
                z = zone_copy.display(),
            );
            let conf = dir.join("knot.conf");
            std::fs::write(&conf, config).expect("write knot.conf");
            let mut child = Command::new(&knotd)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn knotd");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let soa = Q::new(origin, 6).packet(1);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // died (port taken?): try another port
                }
                if let Some(r) = exchange(addr, &soa, false)
                    && r.len() > 3
                    && r[2] & 0x04 != 0
                {
                    return Some(Knot { child, addr, dir });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "knotd did not start serving {origin} (config in {})",
            dir.display()
        );
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
