//! [`TestDns`]: a tiny authoritative DNS server on a loopback UDP port, serving A, AAAA and SRV
//! records that a test can change while it runs, or silence to see what clients do when DNS
//! stops answering.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// One SRV record's data.
#[derive(Debug, Clone)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// An absolute name such as "u1.test.".
    pub target: String,
}

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Zone {
    /// Lower-case absolute name -> records of every type.
    records: HashMap<String, Vec<RData>>,
    ttl: u32,
}

impl TestDns {
    /// Starts serving on an OS-chosen port of 127.0.0.1, with no records and a TTL of 1 s.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind test DNS");
        let addr = socket.local_addr().expect("test DNS address");
        let zone = Arc::new(Mutex::new(Zone {
            ttl: 1,
            ..Zone::default()
        }));
        let silent = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(
            socket,
            Arc::clone(&zone),
            Arc::clone(&silent),
            Arc::clone(&queries),
        ));
        Self {
            addr,
            zone,
            silent,
            queries,
            task,
        }
    }

    /// Replaces the address records (A and AAAA) of `name`.
    pub fn set_addresses(&self, name: &str, addresses: &[IpAddr]) {
        let records = addresses
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            })
            .collect();
        self.replace(name, &[RecordType::A, RecordType::AAAA], records);
    }

    /// Replaces the SRV records of `name`.
    pub fn set_srv(&self, name: &str, records: &[SrvRecord]) {
        let records = records
            .iter()
            .map(|r| {
                let target: Name = r.target.parse().expect("SRV target name");
                RData::SRV(SRV::new(r.priority, r.weight, r.port, target))
            })
            .collect();
        self.replace(name, &[RecordType::SRV], records);
    }

    /// The TTL of every answer from now on.
    pub fn set_ttl(&self, ttl: u32) {
        self.zone.lock().expect("zone").ttl = ttl;
    }

    /// Stops answering (queries are read and dropped, so clients time out) or resumes.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    fn replace(&self, name: &str, types: &[RecordType], records: Vec<RData>) {
        let mut zone = self.zone.lock().expect("zone");
        let entry = zone.records.entry(key(name)).or_default();
        entry.retain(|r| !types.contains(&r.record_type()));
        entry.extend(records);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

async fn serve(
    socket: UdpSocket,
    zone: Arc<Mutex<Zone>>,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(request) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let response = answer(&request, &zone.lock().expect("zone"));
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

fn answer(request: &Message, zone: &Zone) -> Message {
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(query.clone());
    let name = key(&query.name.to_ascii());
    let Some(records) = zone.records.get(&name) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return response;
    };
    for data in records
        .iter()
        .filter(|r| r.record_type() == query.query_type)
    {
        response.add_answer(Record::from_rdata(
            query.name.clone(),
            zone.ttl,
            data.clone(),
        ));
    }
    response
}
