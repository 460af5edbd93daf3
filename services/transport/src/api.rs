//! The gRPC API of punktfunk-transport (what `punktfunkctl` calls).

use std::sync::Arc;
use std::time::{Duration, Instant};

use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::transport::transport_server::Transport;
use punktfunk_proto::transport::*;
use tonic::{Request, Response, Status};

use crate::host::Host;
use crate::pairing;

/// Default and bounds of a pairing window.
const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
const MAX_WINDOW: Duration = Duration::from_secs(600);

pub struct TransportApi {
    pub host: Arc<Host>,
    /// The GameStream shell, when it runs.
    pub gamestream: Option<Arc<crate::gamestream::GameStream>>,
}

fn to_proto(c: pairing::PairedClient) -> PairedClient {
    PairedClient {
        name: c.name,
        fingerprint: c.fingerprint,
        paired_at: c.paired_at,
        protocol: c.protocol,
    }
}

#[tonic::async_trait]
impl Transport for TransportApi {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.host.health.reply()))
    }

    async fn arm_pairing(
        &self,
        req: Request<ArmPairingRequest>,
    ) -> Result<Response<ArmPairingReply>, Status> {
        let req = req.into_inner();
        if !req.pin.is_empty() {
            let Some(gs) = &self.gamestream else {
                return Err(Status::failed_precondition(
                    "GameStream is disabled on this host ([gamestream] enabled = false in transport.toml)",
                ));
            };
            return match gs.submit_pin(req.pin.trim()) {
                Ok(()) => {
                    tracing::info!("Moonlight pairing PIN entered on the host");
                    Ok(Response::new(ArmPairingReply {
                        pin: req.pin,
                        expires_s: 0,
                    }))
                }
                Err(e) => Err(Status::failed_precondition(e.to_string())),
            };
        }
        let secs = req.window_s;
        let ttl = if secs == 0 {
            DEFAULT_WINDOW
        } else {
            Duration::from_secs(secs.into()).min(MAX_WINDOW)
        };
        let pin = punktfunk_control::pairing::generate_pin();
        let armed = self.host.arm_pairing(pin, Instant::now(), ttl);
        tracing::info!(
            expires_s = ttl.as_secs(),
            "pairing armed: the PIN admits one attempt"
        );
        self.host.refresh_status();
        Ok(Response::new(ArmPairingReply {
            pin: armed.pin,
            expires_s: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        }))
    }

    async fn list_clients(
        &self,
        _: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsReply>, Status> {
        let clients = self
            .host
            .paired_clients()
            .into_iter()
            .map(to_proto)
            .collect();
        let pending = self
            .gamestream
            .iter()
            .flat_map(|gs| gs.pending())
            .map(|p| PairedClient {
                name: p.name,
                fingerprint: p.fingerprint,
                paired_at: p.started_unix,
                protocol: crate::session::Protocol::GameStream.as_str().into(),
            })
            .collect();
        Ok(Response::new(ListClientsReply { clients, pending }))
    }

    async fn unpair(&self, req: Request<UnpairRequest>) -> Result<Response<UnpairReply>, Status> {
        let who = req.into_inner().client;
        // Stored first: a failed write leaves the client paired and its sessions running, and
        // the caller is told so.
        match self.host.unpair(&who) {
            Ok((fp, client, ended)) => {
                tracing::info!(client = %client.name, fingerprint = %fp.short(), sessions_ended = ended, "unpaired");
                self.host.refresh_status();
                Ok(Response::new(UnpairReply {
                    removed: Some(to_proto(client)),
                }))
            }
            Err(e @ (pairing::StoreError::NoMatch(_) | pairing::StoreError::Ambiguous(_))) => {
                Err(Status::not_found(e.to_string()))
            }
            Err(e) => Err(Status::internal(format!(
                "{e}; nothing changed: the client is still paired"
            ))),
        }
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsReply>, Status> {
        Ok(Response::new(ListSessionsReply {
            sessions: self.host.session_infos(),
        }))
    }
}
