//! punktfunk-transport: the network-facing daemon and per-client session orchestrator
//! (docs/architecture.md): punktfunk/1 over QUIC with PIN pairing, the UDP data plane,
//! mDNS discovery, and the gRPC API `punktfunkctl` uses.
#![forbid(unsafe_code)]

mod api;
mod config;
mod gamestream;
mod gone;
mod host;
mod input;
mod media;
mod native;
mod output;
mod pairing;
mod pump;
mod session;
mod stream;
mod supervisor;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use punktfunk_common::config::ConfigError;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::paths;
use punktfunk_proto::transport::transport_server::TransportServer;
use punktfunk_tls::Identity;

use crate::config::{PairingMode, TransportConfig};
use crate::host::Host;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    // Before any thread exists: sessions come and go, and each one's threads would otherwise
    // leave glibc arenas behind (see punktfunk_common::alloc).
    punktfunk_common::alloc::limit_arenas();
    daemon::run::<TransportConfig, _, _>("transport", setup)
}

async fn setup(ctx: Context<TransportConfig>) -> Result<tonic::service::Routes, BoxError> {
    let config = (*ctx.config).clone();
    let dir = paths::config_dir()?;
    let host_name = if config.host_name.trim().is_empty() {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "punktfunk".into())
    } else {
        config.host_name.trim().to_string()
    };
    // The host's identity and paired clients live in the config dir: if they cannot be created
    // or read, a restart fails the same way, so this is a configuration error (exit 78).
    let identity = Identity::load_or_create(&dir, "host", &host_name).map_err(|e| {
        ConfigError::files(
            &dir,
            format!(
                "{e}; the host keeps its identity here: make the directory writable by this user"
            ),
        )
    })?;
    let paired = pairing::PairedStore::open(&dir).map_err(|e| ConfigError::files(&dir, e))?;
    if config.pairing == PairingMode::Open {
        tracing::warn!(
            "PAIRING IS OFF (pairing = \"open\" in transport.toml): anyone on the network may stream from this host"
        );
    }
    tracing::info!(fingerprint = %identity.fingerprint, host = %host_name, paired_clients = paired.list().len(), "host identity");
    let host = Arc::new(Host::new(
        config,
        host_name,
        identity,
        ctx.health.clone(),
        paired,
        ctx.runtime_dir.clone(),
    ));

    let endpoint = native::bind(&host)?;
    let local = endpoint.local_addr()?;
    host.set_listen(local);
    tracing::info!(%local, "punktfunk/1 listening");
    tokio::spawn(native::serve(host.clone(), endpoint));

    // GameStream failing to start (its ports taken by Sunshine, say) leaves punktfunk/1
    // serving: the reason is logged and shown in the status line.
    let gamestream = if host.config.gamestream.enabled {
        match gamestream::GameStream::start(host.clone(), &dir).await {
            Ok(gs) => Some(gs),
            Err(e) => {
                tracing::error!("GameStream (Moonlight) is off: {e:#}");
                host.set_note(Some(format!("GameStream off: {e:#}")));
                None
            }
        }
    } else {
        None
    };

    let _advert = discovery(&host, local.port());
    // The status line mentions the pairing window's countdown; keep it fresh.
    let h = host.clone();
    tokio::spawn(async move {
        let _keep = _advert;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            h.refresh_status();
        }
    });
    host.refresh_status();
    Ok(tonic::service::Routes::new(TransportServer::new(
        api::TransportApi { host, gamestream },
    )))
}

/// Advertises `_punktfunk._udp` when enabled; failures are logged, never fatal (a host without
/// multicast still serves clients that know its address).
fn discovery(host: &Host, port: u16) -> Option<punktfunk_discovery::Advertiser> {
    if !host.config.mdns {
        return None;
    }
    let fp = host.identity.fingerprint.to_hex();
    let mut advert = punktfunk_discovery::HostAdvert::new(fp.clone(), fp[..16].to_string());
    advert.instance = host.host_name.clone();
    advert.port = port;
    advert.pairing_required = host.config.pairing == PairingMode::Required;
    match punktfunk_discovery::Advertiser::start(advert) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "mDNS advertisement failed; clients must be given the host's address");
            None
        }
    }
}
