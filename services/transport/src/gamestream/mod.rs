//! The GameStream shell: what stock Moonlight clients speak (docs/gamestream.md). This part
//! serves the HTTP API on the base port and HTTPS with client certificates on base − 5:
//! `serverinfo`, PIN pairing, `applist`, `appasset`, `launch`/`resume`/`cancel`, `unpair`.
//!
//! Pairing is the reverse of punktfunk/1's: Moonlight shows the PIN, the user types it on the
//! host (`punktfunkctl pair --pin NNNN`), which completes the pairing Moonlight is waiting in.
//! Paired Moonlight clients live in the same paired-clients store as punktfunk/1's, with
//! protocol `gamestream`, so `punktfunkctl clients`/`unpair` show and remove them.

mod http;
mod identity;
pub mod pairing;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use punktfunk_tls::Fingerprint;
use tokio::sync::oneshot;

use crate::host::Host;
pub use identity::HostIdentity;

/// GameStream's port map, in one place (spec §1.1, Sunshine's convention): every port is an
/// offset from the HTTP port. Only the HTTP port is well known to clients; the others reach
/// them through `serverinfo` (HTTPS), `launch` (RTSP) and the RTSP SETUP replies (UDP), so a
/// host on another base port works as long as the replies agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// HTTP API (TCP), the base.
    pub http: u16,
}

/// The HTTP port Moonlight assumes when the user gives no port (defined once, in discovery).
pub const DEFAULT_HTTP_PORT: u16 = punktfunk_discovery::GAMESTREAM_HTTP_PORT;

impl Ports {
    /// HTTPS API (TCP), base − 5.
    pub fn https(self) -> u16 {
        self.http.wrapping_sub(5)
    }
    /// Video RTP (UDP), base + 9.
    pub fn video(self) -> u16 {
        self.http.wrapping_add(9)
    }
    /// ENet control (UDP), base + 10.
    pub fn control(self) -> u16 {
        self.http.wrapping_add(10)
    }
    /// Audio RTP (UDP), base + 11.
    pub fn audio(self) -> u16 {
        self.http.wrapping_add(11)
    }
    /// RTSP (TCP), base + 21.
    pub fn rtsp(self) -> u16 {
        self.http.wrapping_add(21)
    }
}

/// How long a Moonlight pairing waits for its PIN on the host.
pub const PIN_WAIT: Duration = Duration::from_secs(120);
/// Failed attempts (wrong PIN, or a client giving up) before pairing locks.
pub const MAX_FAILURES: u32 = 3;
/// How long pairing stays locked after [`MAX_FAILURES`].
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// A pairing attempt between its phases.
struct Pending {
    /// Ties the phases of one attempt together (Moonlight's `uniqueid`; not an identity).
    unique_id: String,
    attempt: pairing::Attempt,
    started: Instant,
    started_unix: u64,
    /// Completes the long-polled phase 1 with the PIN typed on the host.
    pin_tx: Option<oneshot::Sender<String>>,
}

#[derive(Default)]
struct PairingState {
    pending: Option<Pending>,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Why `punktfunkctl pair --pin` could not complete a pairing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    #[error("a Moonlight PIN is 4 digits")]
    Format,
    #[error(
        "no Moonlight client is waiting to pair: start pairing in Moonlight first, then type the PIN it shows"
    )]
    NoneWaiting,
}

/// A pending pairing as `punktfunkctl clients` shows it.
pub struct PendingInfo {
    pub name: String,
    pub fingerprint: String,
    pub started_unix: u64,
}

/// The shell's state, shared by its servers.
pub struct GameStream {
    host: Arc<Host>,
    identity: HostIdentity,
    ports: Ports,
    pairing: Mutex<PairingState>,
    /// `_nvstream._tcp` while it runs (None: mDNS off or failed).
    _advert: Option<punktfunk_discovery::Advertiser>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GameStream {
    /// Loads (or creates) the RSA identity and binds the HTTP and HTTPS listeners.
    pub async fn start(host: Arc<Host>, config_dir: &std::path::Path) -> anyhow::Result<Arc<Self>> {
        let identity = HostIdentity::load_or_create(config_dir)?;
        let ports = Ports {
            http: host.config.gamestream.http_port,
        };
        let ip: IpAddr = host.config.bind.parse().context("bind address")?;
        let tls = identity.tls_config().context("GameStream TLS")?;
        let bind = |port: u16| async move {
            let addr = SocketAddr::new(ip, port);
            tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on TCP {addr} for GameStream (is Sunshine or another host running? set [gamestream] http_port in transport.toml)")
            })
        };
        let http_listener = bind(ports.http).await?;
        let https_listener = bind(ports.https()).await?;
        let advert = advertise(&host, ports.http);
        let gs = Arc::new(Self {
            host,
            identity,
            ports,
            pairing: Mutex::new(PairingState::default()),
            _advert: advert,
        });
        tracing::info!(
            http = ports.http,
            https = ports.https(),
            rtsp = ports.rtsp(),
            video = ports.video(),
            control = ports.control(),
            audio = ports.audio(),
            uniqueid = %gs.identity.unique_id,
            "GameStream listening (streaming over GameStream is not served yet)"
        );
        tokio::spawn(http::serve(gs.clone(), http_listener, None));
        tokio::spawn(http::serve(
            gs.clone(),
            https_listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        ));
        Ok(gs)
    }

    /// Whether the certificate presented on HTTPS belongs to a paired client.
    fn is_paired(&self, cert: Option<&[u8]>) -> bool {
        cert.is_some_and(|c| self.host.is_paired(&Fingerprint::of(c)))
    }

    /// `punktfunkctl pair --pin NNNN`: hands the PIN to the pairing waiting for it.
    pub fn submit_pin(&self, pin: &str) -> Result<(), PinError> {
        if pin.len() != 4 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinError::Format);
        }
        let tx = {
            let mut st = lock(&self.pairing);
            let now = Instant::now();
            expire(&mut st, now);
            st.pending
                .as_mut()
                .filter(|p| p.attempt.waiting_for_pin())
                .and_then(|p| p.pin_tx.take())
        };
        let sent = tx.map(|tx| tx.send(pin.to_string()).is_ok());
        self.refresh_status();
        match sent {
            Some(true) => Ok(()),
            _ => Err(PinError::NoneWaiting),
        }
    }

    /// The pairing waiting for its PIN, if any.
    pub fn pending(&self) -> Vec<PendingInfo> {
        let mut st = lock(&self.pairing);
        expire(&mut st, Instant::now());
        st.pending
            .iter()
            .map(|p| {
                let fp = Fingerprint::of(&p.attempt.client_cert);
                PendingInfo {
                    name: client_name(&fp),
                    fingerprint: fp.to_hex(),
                    started_unix: p.started_unix,
                }
            })
            .collect()
    }

    /// Counts a failed attempt (locking pairing after [`MAX_FAILURES`]) and drops it.
    fn fail(&self, remote: SocketAddr, reason: &str) {
        {
            let mut st = lock(&self.pairing);
            st.pending = None;
            st.failures += 1;
            if st.failures >= MAX_FAILURES {
                st.failures = 0;
                st.locked_until = Some(Instant::now() + LOCKOUT);
                tracing::warn!(
                    lockout_s = LOCKOUT.as_secs(),
                    "GameStream pairing locked after repeated failures"
                );
            }
        }
        self.host
            .pairing_failed(remote, "moonlight", &format!("GameStream: {reason}"));
        self.refresh_status();
    }

    /// Tells the host's status line whether a Moonlight pairing waits for its PIN.
    fn refresh_status(&self) {
        let waiting = !self.pending().is_empty();
        self.host.set_note(waiting.then(|| {
            "a Moonlight client waits to pair: type the PIN it shows with `punktfunkctl pair --pin NNNN`".to_string()
        }));
        self.host.refresh_status();
    }
}

/// Advertises `_nvstream._tcp` on the HTTP port (spec §1.2) when mDNS is on; a failure is
/// logged (Moonlight users can still add the host by address).
fn advertise(host: &Host, port: u16) -> Option<punktfunk_discovery::Advertiser> {
    if !host.config.mdns {
        return None;
    }
    let advert = punktfunk_discovery::GameStreamAdvert {
        instance: host.host_name.clone(),
        port,
        addresses: None,
        hostname: None,
    };
    match punktfunk_discovery::Advertiser::start_gamestream(advert) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "mDNS advertisement of GameStream failed; Moonlight users must add this host by address");
            None
        }
    }
}

/// Drops an attempt whose PIN never came.
fn expire(st: &mut PairingState, now: Instant) {
    if st
        .pending
        .as_ref()
        .is_some_and(|p| now.duration_since(p.started) > PIN_WAIT)
    {
        st.pending = None;
    }
    if st.locked_until.is_some_and(|t| t <= now) {
        st.locked_until = None;
    }
}

/// The name a Moonlight client is stored under (Moonlight sends no usable device name: it is
/// always "roth").
pub fn client_name(fp: &Fingerprint) -> String {
    format!("moonlight-{}", &fp.to_hex()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_sunshines_offsets() {
        let p = Ports {
            http: DEFAULT_HTTP_PORT,
        };
        assert_eq!(
            (p.https(), p.video(), p.control(), p.audio(), p.rtsp()),
            (47984, 47998, 47999, 48000, 48010)
        );
    }
}
