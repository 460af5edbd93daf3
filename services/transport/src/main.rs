//! punktfunk-transport: the network-facing daemon and per-client session orchestrator
//! (ARCHITECTURE.md §2–3). It will run punktfunk/1 and GameStream, pairing and discovery;
//! for now it serves `Health` and declares its API.

use std::process::ExitCode;
use std::sync::Arc;

use punktfunk_common::config::BaseConfig;
use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_common::not_yet;
use punktfunk_proto::common::{HealthReply, HealthRequest};
use punktfunk_proto::transport::transport_server::{Transport, TransportServer};
use punktfunk_proto::transport::*;
use tonic::{Request, Response, Status};

const PAIRING: &str = "the punktfunk/1 control plane (QUIC sessions and SPAKE2 pairing)";

struct TransportService {
    health: Arc<Health>,
}

#[tonic::async_trait]
impl Transport for TransportService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }
    async fn arm_pairing(
        &self,
        _: Request<ArmPairingRequest>,
    ) -> Result<Response<ArmPairingReply>, Status> {
        Err(not_yet("ArmPairing", PAIRING))
    }
    async fn list_clients(
        &self,
        _: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsReply>, Status> {
        Err(not_yet("ListClients", PAIRING))
    }
    async fn unpair(&self, _: Request<UnpairRequest>) -> Result<Response<UnpairReply>, Status> {
        Err(not_yet("Unpair", PAIRING))
    }
    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsReply>, Status> {
        Err(not_yet("ListSessions", PAIRING))
    }
}

fn main() -> ExitCode {
    daemon::run::<BaseConfig, _, _>("transport", |ctx: Context<BaseConfig>| async move {
        ctx.health
            .set_status("idle: no clients (network planes not enabled yet)");
        let svc = TransportServer::new(TransportService { health: ctx.health });
        Ok(tonic::service::Routes::new(svc))
    })
}
