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
mod media;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use punktfunk_gamestream::pairing::{
    PairedClient, PairingEvent, PairingHost, PairingPolicy, PinError,
};
use punktfunk_tls::Fingerprint;

use crate::host::Host;
use crate::session::Protocol;

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

/// A pending pairing as `punktfunkctl clients` shows it.
pub struct PendingInfo {
    pub name: String,
    pub fingerprint: String,
    pub started_unix: u64,
}

/// The shell's state, shared by its servers.
pub struct GameStream {
    host: Arc<Host>,
    unique_id: String,
    ports: Ports,
    /// The core's pairing machine (its call order: see `punktfunk_gamestream::pairing`).
    pairing: Mutex<PairingHost>,
    /// Wakes held phase-1 requests when a PIN was typed.
    pin_typed: tokio::sync::Notify,
    /// `_nvstream._tcp` while it runs (None: mDNS off or failed).
    _advert: Option<punktfunk_discovery::Advertiser>,
    /// What `/launch` set up, until `/cancel`.
    launch: Mutex<Option<Arc<stream::Launch>>>,
    /// Input from GameStream clients, by kind.
    input: stream::InputCounters,
    /// The ENet thread's command queue.
    control: Mutex<Option<std::sync::mpsc::Sender<stream::ControlCommand>>>,
    /// The daemon's runtime (the ENet and ping threads start async work on it).
    runtime: tokio::runtime::Handle,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    punktfunk_clock::monotonic_ns()
}

impl GameStream {
    /// Loads (or creates) the RSA identity and binds the HTTP and HTTPS listeners.
    pub async fn start(host: Arc<Host>, config_dir: &std::path::Path) -> anyhow::Result<Arc<Self>> {
        let identity = identity::load_or_create(config_dir)?;
        let ports = Ports {
            http: host.config.gamestream.http_port,
        };
        let ip: IpAddr = host.config.bind.parse().context("bind address")?;
        let tls = identity::tls_config(&identity).context("GameStream TLS")?;
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
            unique_id: identity::unique_id(&identity),
            pairing: Mutex::new(PairingHost::new(identity, PairingPolicy::default())),
            ports,
            pin_typed: tokio::sync::Notify::new(),
            _advert: advert,
            launch: Mutex::new(None),
            input: stream::InputCounters::default(),
            control: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        });
        let rtsp_listener = bind(ports.rtsp()).await?;
        tokio::spawn(stream::serve_rtsp(gs.clone(), rtsp_listener));
        stream::bind_ping_ports(&gs, ip).context("GameStream video/audio ports")?;
        *lock(&gs.control) =
            Some(stream::start_control(gs.clone(), ip).context("GameStream control port")?);
        tracing::info!(
            http = ports.http,
            https = ports.https(),
            rtsp = ports.rtsp(),
            video = ports.video(),
            control = ports.control(),
            audio = ports.audio(),
            uniqueid = %gs.unique_id,
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

    /// The current launch, if any.
    fn current_launch(&self) -> Option<Arc<stream::Launch>> {
        lock(&self.launch).clone()
    }

    /// `/cancel`: ends the launch and its stream (media goes idle), telling connected clients
    /// the stream ended gracefully.
    async fn cancel(&self) {
        let launch = lock(&self.launch).take();
        if let Some(tx) = lock(&self.control).as_ref() {
            let _ = tx.send(stream::ControlCommand::TerminateAll);
        }
        if let Some(l) = launch {
            l.stop(&self.host).await;
            tracing::info!("GameStream launch cancelled");
        }
        self.refresh_status();
    }

    /// Whether the certificate presented on HTTPS belongs to a paired client.
    fn is_paired(&self, cert: Option<&[u8]>) -> bool {
        cert.is_some_and(|c| self.host.is_paired(&Fingerprint::of(c)))
    }

    /// Runs `f` on the pairing machine, then acts on what it reports (no lock held then);
    /// newly paired clients are handed back for the caller to store before it replies.
    fn with_pairing_paired<R>(
        &self,
        f: impl FnOnce(&mut PairingHost) -> R,
    ) -> (R, Vec<PairedClient>) {
        let (r, events) = {
            let mut p = lock(&self.pairing);
            let r = f(&mut p);
            let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
            (r, events)
        };
        let mut paired = Vec::new();
        for e in events {
            match e {
                PairingEvent::Paired(c) => paired.push(c),
                e => self.on_event(e),
            }
        }
        self.refresh_status();
        (r, paired)
    }

    /// As [`Self::with_pairing_paired`], storing any newly paired client itself.
    fn with_pairing<R>(&self, f: impl FnOnce(&mut PairingHost) -> R) -> R {
        let (r, paired) = self.with_pairing_paired(f);
        for c in paired {
            self.store_paired(&c.cert_der);
        }
        r
    }

    fn on_event(&self, e: PairingEvent) {
        match e {
            PairingEvent::Pending(_) => {
                tracing::info!("a Moonlight client waits to pair: punktfunkctl pair --pin NNNN");
            }
            PairingEvent::Paired(c) => {
                // with_pairing_paired hands these to its caller instead.
                self.store_paired(&c.cert_der);
            }
            PairingEvent::Failed {
                reason, counted, ..
            } => {
                let remote: SocketAddr = ([0, 0, 0, 0], 0).into();
                if counted {
                    self.host
                        .pairing_failed(remote, "moonlight", &format!("GameStream: {reason}"));
                } else {
                    tracing::info!(%reason, "Moonlight pairing ended before a PIN was typed");
                }
            }
            PairingEvent::Locked { .. } => {
                tracing::warn!("GameStream pairing locked after repeated failures");
            }
        }
    }

    /// Stores a client whose phase 4 succeeded (memory changes only after the file is
    /// written); false if it could not be stored.
    fn store_paired(&self, cert_der: &[u8]) -> bool {
        let fp = Fingerprint::of(cert_der);
        let name = client_name(&fp);
        match self
            .host
            .add_paired(fp, &name, Protocol::GameStream.as_str())
        {
            Ok(_) => {
                tracing::info!(client = %name, fingerprint = %fp.short(), "Moonlight client paired");
                true
            }
            Err(e) => {
                tracing::error!(client = %name, "pairing not stored: {e}");
                false
            }
        }
    }

    /// `punktfunkctl pair --pin NNNN`: hands the PIN to the pairing waiting for it.
    pub fn submit_pin(&self, pin: &str) -> Result<(), PinError> {
        let r = self.with_pairing(|p| p.submit_pin(now(), pin));
        self.pin_typed.notify_waiters();
        r.map(|_| ())
    }

    /// The pairing waiting for its PIN, if any.
    pub fn pending(&self) -> Vec<PendingInfo> {
        let info = {
            let mut p = lock(&self.pairing);
            p.handle_timeout(now());
            p.pending()
        };
        let age = |since_ns: u64| std::time::Duration::from_nanos(now().saturating_sub(since_ns));
        info.into_iter()
            .map(|i| {
                let fp = Fingerprint(i.fingerprint);
                PendingInfo {
                    name: client_name(&fp),
                    fingerprint: fp.to_hex(),
                    started_unix: std::time::SystemTime::now()
                        .checked_sub(age(i.since_ns))
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                }
            })
            .collect()
    }

    /// Tells the host's status line whether a Moonlight pairing waits for its PIN.
    fn refresh_status(&self) {
        let waiting = {
            let p = lock(&self.pairing);
            p.pending().is_some_and(|i| !i.pin_entered)
        };
        let mut notes = Vec::new();
        if waiting {
            notes.push("a Moonlight client waits to pair: type the PIN it shows with `punktfunkctl pair --pin NNNN`".to_string());
        }
        if let Some(l) = self.current_launch() {
            notes.push(format!("Moonlight launched app {}", l.app_id));
        }
        if self.input.any() {
            notes.push(self.input.summary());
        }
        self.host
            .set_note((!notes.is_empty()).then(|| notes.join("; ")));
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
