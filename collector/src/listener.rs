//! Placeholder for the connection metadata type until the transport layer lands (the merge replaces this file).
use std::net::SocketAddr;
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub proxied: Option<SocketAddr>,
    pub local: SocketAddr,
    pub tls: Option<TlsInfo>,
}
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub sni: Option<String>,
}
