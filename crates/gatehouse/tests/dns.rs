//! End-to-end: `gatehouse dns serve` as a process, asked by real clients (dig or kdig when
//! installed, and raw UDP/TCP packets), and its refusal of bad zone files.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ZONE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dns/tests/data/example.test.zone"
);

/// The server process; killed on drop.
struct DnsServe {
    child: Child,
    addr: SocketAddr,
}

impl DnsServe {
    fn start(zones: &[&Path]) -> DnsServe {
        let mut cmd = Command::new(common::bin());
        cmd.args(["dns", "serve", "--listen", "127.0.0.1:0", "--workers", "1"]);
        for z in zones {
            cmd.arg("--zone").arg(z);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gatehouse");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        DnsServe { child, addr }
    }
}

impl Drop for DnsServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.extend_from_slice(&[0, 0, qtype as u8, 0, 1]);
    p
}

#[test]
fn dig_gets_authoritative_answers_over_udp_and_tcp() {
    let server = DnsServe::start(&[Path::new(ZONE)]);
    let port = server.addr.port().to_string();
    let tools: Vec<(&str, Vec<&str>)> = [("dig", vec!["+norec"]), ("kdig", vec!["+norec"])]
        .into_iter()
        .filter(|(t, _)| which(t).is_some())
        .collect();
    if tools.is_empty() {
        eprintln!(
            "SKIPPED the dig/kdig part: neither is installed (apt-get install bind9-dnsutils knot-dnsutils)"
        );
    }
    for (tool, extra) in tools {
        for transport in ["+notcp", "+tcp"] {
            let out = Command::new(tool)
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port,
                    "www.example.test",
                    "A",
                    transport,
                ])
                .args(&extra)
                .output()
                .expect("run dig");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{tool} {transport}: {text}");
            assert!(text.contains("NOERROR"), "{tool} {transport}: {text}");
            assert!(text.contains(" aa"), "{tool} {transport}: no AA: {text}");
            assert!(text.contains("192.0.2.80"), "{tool} {transport}: {text}");
        }
        // TC over UDP, then the client's own retry over TCP gets all 30 addresses.
        let out = Command::new(tool)
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "big.example.test",
                "A",
                "+noedns",
                "+short",
            ])
            .output()
            .expect("run dig");
        let text = String::from_utf8_lossy(&out.stdout);
        // (some versions also print a ";; Truncated, retrying in TCP mode." line.)
        let addresses = text.lines().filter(|l| l.starts_with("10.0.0.")).count();
        assert_eq!(addresses, 30, "{tool}: {text}");
    }

    // Raw UDP: the answer echoes the ID and the question's case.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = query("MAIL.example.test", 28);
    udp.send_to(&q, server.addr).unwrap();
    let mut buf = [0u8; 1500];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0xab, 0xcd]);
    assert_eq!(&buf[12..q.len()], &q[12..]);
    assert_eq!(buf[3] & 0x0f, 0);
    assert!(n > q.len());

    // TCP: two pipelined queries on one connection, two answers in order.
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    for name in ["web.example.test", "nothere.example.test"] {
        let q = query(name, 1);
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(&q);
    }
    tcp.write_all(&out).unwrap();
    for expected_rcode in [0, 3] {
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut resp = vec![0; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut resp).unwrap();
        assert_eq!(resp[3] & 0x0f, expected_rcode);
    }
}

#[test]
fn serves_several_zones_and_refuses_others() {
    let dir = std::env::temp_dir().join(format!("gatehouse-dns-zones-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("other.zone");
    std::fs::write(
        &other,
        "$ORIGIN other.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.9\n",
    )
    .unwrap();
    let server = DnsServe::start(&[Path::new(ZONE), &other]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for (name, rcode, aa) in [
        ("ns.other.test", 0, true),
        ("ns1.example.test", 0, true),
        ("elsewhere.org", 5, false),
    ] {
        udp.send_to(&query(name, 1), server.addr).unwrap();
        udp.recv(&mut buf).unwrap();
        assert_eq!((buf[3] & 0x0f, buf[2] & 0x04 != 0), (rcode, aa), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_zone_file_is_refused_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("gatehouse-dns-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.zone");
    std::fs::write(
        &bad,
        "$ORIGIN bad.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.300\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["dns", "serve", "--listen", "127.0.0.1:0", "--zone"])
        .arg(&bad)
        .output()
        .expect("run gatehouse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5: bad A data", bad.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let missing = Command::new(common::bin())
        .args(["dns", "serve", "--zone", "/nonexistent/zone"])
        .output()
        .expect("run gatehouse");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the zone file"));
    let _ = std::fs::remove_dir_all(&dir);
}
