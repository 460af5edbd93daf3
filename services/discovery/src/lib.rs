//! LAN discovery for punktfunk over mDNS / DNS-SD (RFC 6762/6763), built on
//! the `mdns-sd` crate.
//!
//! * The host advertises `_punktfunk._udp.local.` (the native punktfunk/1
//!   plane, QUIC on UDP 9777 by default) with exactly four TXT keys:
//!   `proto=punktfunk/1`, `fp=<SHA-256 of the host certificate, lowercase
//!   hex>`, `pair=required|optional` and `id=<host id>` — see [`Advertiser`]
//!   and [`HostAdvert`]. For GameStream it can also advertise
//!   `_nvstream._tcp.local.` ([`Advertiser::start_gamestream`]).
//! * Clients call [`browse`] / [`browse_until`] / [`browse_report`]
//!   (blocking, bounded by a timeout). TXT content is untrusted network
//!   input: it is validated by [`validate_txt`] (bounded lengths, 64 hex
//!   digit fingerprint, required keys); malformed adverts are skipped and
//!   reported with a reason ([`Rejected`]), never a panic.
//!
//! The fingerprint in the advert is a hint for *which* host to dial, not a
//! trust anchor: anyone on the LAN can advertise anything. Trust comes from
//! pairing (certificate pinning) on the QUIC connection.
//!
//! The `pf-mdns` binary in this crate wraps both sides for tests and people.
#![forbid(unsafe_code)]

mod advertise;
mod browse;
mod txt;

pub use advertise::{
    Advertiser, GameStreamAdvert, HostAdvert, default_instance_name, sanitize_hostname_label,
    sanitize_instance, system_hostname,
};
pub use browse::{BrowseReport, FoundHost, Rejected, SETTLE, browse, browse_report, browse_until};
pub use txt::{
    FP_HEX_LEN, KEY_FP, KEY_ID, KEY_PAIR, KEY_PROTO, MAX_ID_LEN, MAX_KEYS, MAX_OTHER_VALUE_LEN,
    MAX_PAIR_LEN, MAX_PROTO_LEN, Pairing, TxtError, ValidTxt, check_host_id, normalize_fingerprint,
    validate_txt,
};

/// DNS-SD service type of the native plane.
pub const PUNKTFUNK_SERVICE: &str = "_punktfunk._udp.local.";
/// DNS-SD service type of GameStream (Moonlight).
pub const GAMESTREAM_SERVICE: &str = "_nvstream._tcp.local.";
/// Value of the `proto` TXT key this crate advertises: the protocol's name.
pub const PROTO: &str = punktfunk_proto::PROTOCOL_NAME;
/// Default UDP port of the punktfunk/1 QUIC endpoint.
pub const DEFAULT_PORT: u16 = 9777;
/// Default TCP port of the GameStream HTTP endpoint.
pub const GAMESTREAM_HTTP_PORT: u16 = 47989;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mDNS daemon failed (sockets, channel, bad service info).
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    /// The advert to publish is invalid (bad fingerprint, id, port, ...).
    #[error("invalid advert: {0}")]
    InvalidAdvert(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}
