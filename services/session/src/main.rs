//! punktfunk-session: the compositor-output manager (docs/architecture.md, "Compositor
//! outputs"). It starts a headless compositor output at each client's mode (mutter, sway and
//! KWin run here; gamescope is described in the library), hands its screencast to
//! media as a PipeWire node plus a remote fd, and keeps a journal so its outputs outlive it.
//!
//! `punktfunk-session screencast-keeper …` is the per-output helper that obtains and holds the
//! screencast (see `keeper.rs`); it is not run by hand.
#![forbid(unsafe_code)]

mod config;
mod keeper;
mod manager;
mod probe;
mod scope;
mod screencopy_keeper;

use std::process::ExitCode;
use std::sync::Arc;

use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_proto::common::{HealthReply, HealthRequest, Mode as PMode};
use punktfunk_proto::session::session_server::{Session, SessionServer};
use punktfunk_proto::session::*;
use punktfunk_session::backend::{BackendKind, KEEPER_SUBCOMMAND, Mode, OUTPUT_SINK};
use tonic::{Request, Response, Status};

use crate::config::SessionConfig;
use crate::manager::Manager;
use punktfunk_session::request::{checked_mode, start_spec, to_proto_backend};

struct SessionService {
    health: Arc<Health>,
    manager: Arc<Manager>,
    default_backend: BackendKind,
}

fn to_proto_mode(m: Mode) -> PMode {
    PMode {
        width: m.width,
        height: m.height,
        refresh_mhz: m.refresh_mhz,
    }
}

#[tonic::async_trait]
impl Session for SessionService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        Ok(Response::new(self.health.reply()))
    }

    async fn start_output(
        &self,
        req: Request<StartOutputRequest>,
    ) -> Result<Response<StartOutputReply>, Status> {
        let spec = start_spec(req.into_inner(), self.default_backend)?;
        let started = self.manager.start(spec).await?;
        let r = &started.record;
        Ok(Response::new(StartOutputReply {
            output_id: r.id.clone(),
            backend: to_proto_backend(r.backend) as i32,
            wayland_display: r.wayland_display.clone(),
            pipewire_node_id: r.node_id,
            screencast: Some(started.ticket),
            runtime_dir: r.runtime_dir.display().to_string(),
            mode: Some(to_proto_mode(started.mode)),
            app_pid: started.app_pid,
            audio_sink: OUTPUT_SINK.into(),
            resizable: started.resizable,
        }))
    }

    async fn resize_output(
        &self,
        req: Request<ResizeOutputRequest>,
    ) -> Result<Response<ResizeOutputReply>, Status> {
        let req = req.into_inner();
        let mode = checked_mode(req.mode)?;
        let mode = self.manager.resize(&req.output_id, mode).await?;
        Ok(Response::new(ResizeOutputReply {
            mode: Some(to_proto_mode(mode)),
        }))
    }

    async fn stop_output(
        &self,
        req: Request<StopOutputRequest>,
    ) -> Result<Response<StopOutputReply>, Status> {
        self.manager.stop(&req.into_inner().output_id).await?;
        Ok(Response::new(StopOutputReply {}))
    }

    async fn list_outputs(
        &self,
        _: Request<ListOutputsRequest>,
    ) -> Result<Response<ListOutputsReply>, Status> {
        let outputs = self
            .manager
            .list()
            .into_iter()
            .map(|(r, state)| {
                let compositor = r.process(punktfunk_session::backend::Role::Compositor);
                let app = r.process(punktfunk_session::backend::Role::App);
                OutputInfo {
                    output_id: r.id.clone(),
                    backend: to_proto_backend(r.backend) as i32,
                    mode: Some(to_proto_mode(r.mode)),
                    pid: compositor.map_or(0, |p| p.pid),
                    state: state.name().into(),
                    client: r.client.clone(),
                    app: r.app.clone(),
                    app_pid: app
                        .filter(|p| punktfunk_session::proc::alive(p.pid, p.start_ticks))
                        .map_or(0, |p| p.pid),
                    pipewire_node_id: r.node_id,
                    wayland_display: r.wayland_display.clone(),
                    runtime_dir: r.runtime_dir.display().to_string(),
                    started_unix_ms: r.started_unix_ms,
                }
            })
            .collect();
        Ok(Response::new(ListOutputsReply { outputs }))
    }

    async fn open_screencast(
        &self,
        req: Request<OpenScreencastRequest>,
    ) -> Result<Response<OpenScreencastReply>, Status> {
        let (node, ticket) = self.manager.open_screencast(&req.into_inner().output_id)?;
        Ok(Response::new(OpenScreencastReply {
            pipewire_node_id: node,
            screencast: Some(ticket),
            audio_sink: OUTPUT_SINK.into(),
        }))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(KEEPER_SUBCOMMAND) {
        return keeper::main(&args[2..]);
    }
    daemon::run::<SessionConfig, _, _>("session", |ctx: Context<SessionConfig>| async move {
        let punktfunk_dir = ctx
            .runtime_dir
            .clone()
            .ok_or("XDG_RUNTIME_DIR is not set: outputs need a runtime directory")?;
        let runtime_root = punktfunk_dir
            .parent()
            .map(std::path::Path::to_path_buf)
            .ok_or("the runtime directory has no parent")?;
        let manager = Manager::new(
            runtime_root,
            &punktfunk_dir,
            ctx.health.clone(),
            ctx.tickets.clone(),
        )
        .map_err(|e| format!("cannot set up the output manager: {e:#}"))?;
        manager.adopt().await;
        tokio::spawn(manager.clone().watch());
        let svc = SessionServer::new(SessionService {
            health: ctx.health,
            manager,
            default_backend: ctx.config.backend(),
        });
        Ok(tonic::service::Routes::new(svc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        use punktfunk_session::journal::OutputRecord;
        let rec = |backend, client: &str| OutputRecord {
            id: "a".into(),
            backend,
            mode: Mode {
                width: 1280,
                height: 720,
                refresh_mhz: 60_000,
            },
            client: client.into(),
            app: String::new(),
            pgid: 1,
            unit: None,
            processes: vec![],
            runtime_dir: "/r".into(),
            state_dir: "/s".into(),
            wayland_display: "w".into(),
            node_id: 1,
            started_unix_ms: 0,
        };
        assert_eq!(
            manager::status_line([].iter()),
            "idle: no compositor outputs"
        );
        assert_eq!(
            manager::status_line([rec(BackendKind::Mutter, "laptop")].iter()),
            "1 output: mutter 1280x720@60 for laptop"
        );
        assert_eq!(
            manager::status_line(
                [
                    rec(BackendKind::Mutter, "laptop"),
                    rec(BackendKind::Sway, "")
                ]
                .iter()
            ),
            "2 outputs: mutter 1280x720@60 for laptop, sway 1280x720@60 for nobody"
        );
    }
}
