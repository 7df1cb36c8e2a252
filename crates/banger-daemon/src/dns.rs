//! The in-process DNS server for `<name>.vm` (hickory-server, UDP and TCP).
//!
//! Authoritative for `vm.` only: A records of running VMs, NODATA for other types of a known
//! name, NXDOMAIN for unknown names under `vm.`, REFUSED for every other zone. Records live
//! in [`DnsRecords`] (a leaf lock, never held across I/O); VM start/stop/delete update them
//! and reconcile rebuilds them at startup.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The name `banger dns status` looks up through the host's resolver; always 127.0.0.1.
pub const PROBE_NAME: &str = "banger-dns-check";

/// Seconds resolvers may cache an answer: records change on start/stop.
const TTL: u32 = 5;

/// Name → address of running VMs.
#[derive(Debug, Default)]
pub struct DnsRecords {
    map: RwLock<HashMap<String, Ipv4Addr>>,
}

impl DnsRecords {
    /// Adds or replaces the record of `name`.
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        self.write().insert(name.to_ascii_lowercase(), ip);
    }

    /// Removes the record of `name` (absent is fine).
    pub fn remove(&self, name: &str) {
        self.write().remove(&name.to_ascii_lowercase());
    }

    /// Replaces every record.
    pub fn replace_all(&self, records: impl IntoIterator<Item = (String, Ipv4Addr)>) {
        let mut map = self.write();
        map.clear();
        map.extend(
            records
                .into_iter()
                .map(|(n, ip)| (n.to_ascii_lowercase(), ip)),
        );
    }

    /// The address of `name`.
    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        if name == PROBE_NAME {
            return Some(Ipv4Addr::LOCALHOST);
        }
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// All records, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Ipv4Addr)> {
        let mut v: Vec<(String, Ipv4Addr)> = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Ipv4Addr>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the server answers for a query, decided from the name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An A record.
    A(Ipv4Addr),
    /// The name exists but has no record of the asked type.
    NoData,
    /// No such name under `vm.`.
    NxDomain,
    /// Not our zone.
    Refused,
}

/// Decides the answer for `name` (any case, with or without the trailing dot) and `qtype`.
pub fn answer(records: &DnsRecords, name: &str, qtype: RecordType) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "vm" {
        return Answer::NoData;
    }
    let Some(label) = name.strip_suffix(".vm") else {
        return Answer::Refused;
    };
    match records.get(label) {
        Some(ip) if qtype == RecordType::A || qtype == RecordType::ANY => Answer::A(ip),
        Some(_) => Answer::NoData,
        None => Answer::NxDomain,
    }
}

/// The hickory request handler.
#[derive(Debug, Clone)]
pub struct VmDns {
    records: Arc<DnsRecords>,
}

#[async_trait::async_trait]
impl RequestHandler for VmDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response_handle, msg, request).await;
        };
        let qname = info.query.name().to_string();
        let decided = answer(&self.records, &qname, info.query.query_type());
        debug!(name = qname, ?decided, "dns query");
        let mut meta = hickory_proto::op::Metadata::response_from_request(&request.metadata);
        meta.authoritative = !matches!(decided, Answer::Refused);
        match decided {
            Answer::A(ip) => {
                let name = info.query.original().name().clone();
                let record = Record::from_rdata(name, TTL, RData::A(A(ip)));
                let msg = builder.build(meta, std::iter::once(&record), [], [], []);
                send(&mut response_handle, msg, request).await
            }
            Answer::NoData => {
                let msg = builder.build_no_records(meta);
                send(&mut response_handle, msg, request).await
            }
            Answer::NxDomain | Answer::Refused => {
                meta.response_code = if decided == Answer::NxDomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::Refused
                };
                let msg = builder.build_no_records(meta);
                send(&mut response_handle, msg, request).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            warn!("dns: cannot send a response: {e}");
            let mut meta = hickory_proto::op::Metadata::response_from_request(&request.metadata);
            meta.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata: meta,
                counts: hickory_proto::op::HeaderCounts::default(),
            }
            .into()
        }
    }
}

/// Binds UDP and TCP on `addr` and serves until `shutdown`; returns the bound address (the
/// real port when `addr` asks for port 0).
pub async fn serve(
    addr: SocketAddr,
    records: Arc<DnsRecords>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let bound = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(bound).await?;
    let mut server = Server::new(VmDns { records });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = server.shutdown_gracefully().await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_answers_by_zone_and_name() {
        let r = DnsRecords::default();
        r.set("Web", Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(
            answer(&r, "web.vm.", RecordType::A),
            Answer::A(Ipv4Addr::new(172, 16, 0, 2))
        );
        assert_eq!(
            answer(&r, "WEB.VM", RecordType::A),
            Answer::A(Ipv4Addr::new(172, 16, 0, 2))
        );
        assert_eq!(answer(&r, "web.vm.", RecordType::AAAA), Answer::NoData);
        assert_eq!(answer(&r, "other.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(answer(&r, "a.web.vm.", RecordType::A), Answer::NxDomain);
        assert_eq!(answer(&r, "vm.", RecordType::SOA), Answer::NoData);
        assert_eq!(answer(&r, "example.com.", RecordType::A), Answer::Refused);
        assert_eq!(answer(&r, "xvm.", RecordType::A), Answer::Refused);
        assert_eq!(
            answer(&r, "banger-dns-check.vm.", RecordType::A),
            Answer::A(Ipv4Addr::LOCALHOST)
        );
        r.remove("web");
        assert_eq!(answer(&r, "web.vm.", RecordType::A), Answer::NxDomain);
        r.replace_all([("b".to_owned(), Ipv4Addr::new(172, 16, 0, 3))]);
        assert_eq!(
            r.snapshot(),
            [("b".to_owned(), Ipv4Addr::new(172, 16, 0, 3))]
        );
    }
}
