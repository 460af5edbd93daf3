//! punktfunk-session: the compositor-output manager (docs/architecture.md, "Compositor
//! outputs"). It starts a headless compositor output at each client's mode (mutter today;
//! gamescope, KWin and sway backends are described in the library), hands its screencast to
//! media as a PipeWire node plus a remote fd, and keeps a journal so its outputs outlive it.
//!
//! `punktfunk-session screencast-keeper …` is the per-output helper that obtains and holds the
//! screencast (see `keeper.rs`); it is not run by hand.
#![forbid(unsafe_code)]

mod config;
mod keeper;
mod manager;
mod probe;

use std::process::ExitCode;
use std::sync::Arc;

use punktfunk_common::daemon::{self, Context};
use punktfunk_common::health::Health;
use punktfunk_proto::common::{HealthReply, HealthRequest, Mode as PMode};
use punktfunk_proto::session::session_server::{Session, SessionServer};
use punktfunk_proto::session::*;
use punktfunk_session::backend::{BackendKind, KEEPER_SUBCOMMAND, Mode};
use tonic::{Request, Response, Status};

use crate::config::SessionConfig;
use crate::manager::{Manager, StartSpec};

struct SessionService {
    health: Arc<Health>,
    manager: Arc<Manager>,
    default_backend: BackendKind,
}

fn to_proto_backend(k: BackendKind) -> Backend {
    match k {
        BackendKind::Gamescope => Backend::Gamescope,
        BackendKind::Mutter => Backend::Mutter,
        BackendKind::Kwin => Backend::Kwin,
        BackendKind::Sway => Backend::Sway,
        BackendKind::Weston => Backend::Weston,
    }
}

fn from_proto_backend(raw: i32, default: BackendKind) -> Result<BackendKind, Status> {
    Ok(
        match Backend::try_from(raw)
            .map_err(|_| Status::invalid_argument(format!("unknown backend {raw}")))?
        {
            Backend::Unspecified => default,
            Backend::Gamescope => BackendKind::Gamescope,
            Backend::Mutter => BackendKind::Mutter,
            Backend::Kwin => BackendKind::Kwin,
            Backend::Sway => BackendKind::Sway,
            Backend::Weston => BackendKind::Weston,
        },
    )
}

fn to_proto_mode(m: Mode) -> PMode {
    PMode {
        width: m.width,
        height: m.height,
        refresh_mhz: m.refresh_mhz,
    }
}

/// Bounds on what a StartOutputRequest may carry (it comes from transport, but is still input).
const MAX_ARGS: usize = 256;
const MAX_ENV: usize = 256;
const MAX_TEXT: usize = 4096;

fn start_spec(req: StartOutputRequest, default: BackendKind) -> Result<StartSpec, Status> {
    let m = req
        .mode
        .ok_or_else(|| Status::invalid_argument("mode is required (width, height, refresh)"))?;
    let mode = Mode {
        width: m.width,
        height: m.height,
        refresh_mhz: m.refresh_mhz,
    };
    mode.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let backend = from_proto_backend(req.backend, default)?;
    let app = req.app.unwrap_or_default();
    if app.command.len() > MAX_ARGS || app.env.len() > MAX_ENV {
        return Err(Status::invalid_argument(format!(
            "an app takes at most {MAX_ARGS} arguments and {MAX_ENV} environment variables"
        )));
    }
    let too_long = std::iter::once(&req.client)
        .chain(std::iter::once(&app.title))
        .chain(app.command.iter())
        .chain(app.env.iter().flat_map(|(k, v)| [k, v]))
        .any(|s| s.len() > MAX_TEXT || s.contains('\0'));
    if too_long || app.env.keys().any(|k| k.is_empty() || k.contains('=')) {
        return Err(Status::invalid_argument(format!(
            "the client name, app title, arguments and environment must be at most {MAX_TEXT} \
             bytes without NUL, and variable names non-empty without '='"
        )));
    }
    let mut env: Vec<(String, String)> = app.env.into_iter().collect();
    env.sort();
    Ok(StartSpec {
        backend,
        mode,
        client: req.client,
        app_title: app.title,
        app_command: app.command,
        app_env: env,
    })
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

    fn req(w: u32, h: u32) -> StartOutputRequest {
        StartOutputRequest {
            mode: Some(PMode {
                width: w,
                height: h,
                refresh_mhz: 60_000,
            }),
            backend: Backend::Unspecified as i32,
            client: "laptop".into(),
            app: Some(AppLaunch {
                title: "Test pattern".into(),
                command: vec!["punktfunk-testpattern".into()],
                env: [("A".to_string(), "1".to_string())].into(),
            }),
        }
    }

    #[test]
    fn requests_are_checked() {
        let s = start_spec(req(1280, 720), BackendKind::Mutter).unwrap();
        assert_eq!(s.backend, BackendKind::Mutter);
        assert_eq!(s.app_env, vec![("A".to_string(), "1".to_string())]);
        assert!(start_spec(req(1281, 720), BackendKind::Mutter).is_err());
        let mut r = req(1280, 720);
        r.mode = None;
        assert!(start_spec(r, BackendKind::Mutter).is_err());
        let mut r = req(1280, 720);
        r.backend = 99;
        assert!(start_spec(r, BackendKind::Mutter).is_err());
        let mut r = req(1280, 720);
        r.app.as_mut().unwrap().env.insert("B=C".into(), "x".into());
        assert!(start_spec(r, BackendKind::Mutter).is_err());
        let mut r = req(1280, 720);
        r.client = "x".repeat(MAX_TEXT + 1);
        assert!(start_spec(r, BackendKind::Mutter).is_err());
    }

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
