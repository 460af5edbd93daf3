//! The client's compositor output (`source = "compositor"`): asked of punktfunk-session at the
//! session's mode with the client's app in it, its screencast handed to media (a fresh
//! PipeWire remote ticket for every media stream, so a restarted media reaches the same node),
//! and stopped when the session ends.
//!
//! Session owns the output's lifetime from the journal on: if punktfunk-session restarts
//! mid-stream the output goes on, and the `StopOutput` at the end reaches the re-adopted one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use punktfunk_common::apps::{Apps, DESKTOP};
use punktfunk_common::{paths, uds};
use punktfunk_control::error::{CODE_OUTPUT_FAILED, CODE_UNKNOWN_APP};
use punktfunk_proto::common::{FdTicket, Mode};
use punktfunk_proto::session::session_client::SessionClient;
use punktfunk_proto::session::{
    AppLaunch, Backend, OpenScreencastRequest, ResizeOutputRequest, StartOutputRequest,
    StopOutputRequest,
};
use tonic::transport::Channel;

use crate::session::Refusal;

/// How long to wait for session's socket and for a short call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// StartOutput starts a compositor, its PipeWire and the screencast (readiness budgets sum to
/// 40 s; allow the retries' backoff on top).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the client asked to run, resolved against the apps file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppChoice {
    /// The app's title; [`DESKTOP`] runs nothing.
    pub title: String,
    /// argv (empty for the desktop).
    pub command: Vec<String>,
    /// The backend: the app's own, else the client's `Hello.compositor`, else session's default.
    pub backend: Backend,
}

impl AppChoice {
    /// Resolves `Hello.app` (`None`: the desktop) and `Hello.compositor` against `apps`.
    pub fn resolve(
        apps: &Apps,
        app: Option<&str>,
        compositor: Option<&str>,
    ) -> Result<Self, Refusal> {
        let title = app.unwrap_or(DESKTOP);
        let entry = apps.find(title).ok_or_else(|| Refusal {
            code: CODE_UNKNOWN_APP,
            message: format!(
                "this host has no app {title:?}: it offers {} (edit apps.toml in the host's \
                 punktfunk config directory to add one)",
                apps.list()
                    .iter()
                    .map(|a| format!("{:?}", a.title))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        let backend = match entry.compositor.as_deref().or(compositor) {
            None => Backend::Unspecified,
            Some(name) => backend_named(name).ok_or_else(|| Refusal {
                code: CODE_OUTPUT_FAILED,
                message: format!(
                    "no compositor backend {name:?}: use gamescope, mutter, kwin, sway or weston"
                ),
            })?,
        };
        Ok(Self {
            title: entry.title.clone(),
            command: entry.command.clone(),
            backend,
        })
    }
}

/// The backend called `name` in apps.toml and `Hello.compositor` (`"mutter"`, ...).
fn backend_named(name: &str) -> Option<Backend> {
    Backend::from_str_name(&format!("BACKEND_{}", name.to_ascii_uppercase()))
        .filter(|b| *b != Backend::Unspecified)
}

/// A running output of punktfunk-session, for one client session.
#[derive(Debug, Clone)]
pub struct Output {
    runtime_dir: PathBuf,
    /// The output's id (its journal entry in punktfunk-session).
    pub id: String,
    /// Its mode, who it is for and what runs in it: a new mode starts a new output like it
    /// unless it is `resizable`.
    pub mode: Mode,
    client: String,
    app: AppChoice,
    /// It can change its mode in place ([`Output::resize`]; session says so).
    pub resizable: bool,
}

/// A screencast to hand to media: the node and a one-use ticket for its PipeWire remote.
#[derive(Debug, Clone)]
pub struct Screencast {
    pub node_id: u32,
    pub ticket: FdTicket,
    /// The output's Audio/Sink on the same remote (its monitor is the session's sound).
    pub audio_sink: String,
}

fn unreachable(runtime_dir: &Path, why: impl std::fmt::Display) -> Refusal {
    Refusal {
        code: CODE_OUTPUT_FAILED,
        message: format!(
            "the session manager is not reachable at {}: {why} (check `systemctl --user status \
             punktfunk-session`)",
            paths::grpc_socket(runtime_dir, "session").display()
        ),
    }
}

async fn connect(runtime_dir: &Path) -> Result<SessionClient<Channel>, Refusal> {
    let path = paths::grpc_socket(runtime_dir, "session");
    uds::connect(&path, CALL_TIMEOUT)
        .await
        .map(SessionClient::new)
        .map_err(|e| unreachable(runtime_dir, e.source))
}

impl Output {
    /// Starts an output at `mode` for `client` with `app` in it.
    pub async fn start(
        runtime_dir: &Path,
        mode: Mode,
        client: &str,
        app: &AppChoice,
    ) -> Result<Self, Refusal> {
        let mut session = connect(runtime_dir).await?;
        let mut req = tonic::Request::new(StartOutputRequest {
            mode: Some(mode),
            backend: app.backend as i32,
            client: client.to_string(),
            app: (!app.command.is_empty()).then(|| AppLaunch {
                title: app.title.clone(),
                command: app.command.clone(),
                env: Default::default(),
            }),
        });
        req.set_timeout(START_TIMEOUT);
        let reply = session
            .start_output(req)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    if s.message().contains("transport") =>
                {
                    unreachable(runtime_dir, s.message())
                }
                _ => Refusal {
                    code: CODE_OUTPUT_FAILED,
                    message: format!("the compositor output did not start: {}", s.message()),
                },
            })?
            .into_inner();
        tracing::info!(
            output = %reply.output_id, backend = ?Backend::try_from(reply.backend).unwrap_or_default(),
            app = %app.title, node = reply.pipewire_node_id, "compositor output started"
        );
        Ok(Self {
            runtime_dir: runtime_dir.to_path_buf(),
            id: reply.output_id,
            mode,
            client: client.to_string(),
            app: app.clone(),
            resizable: reply.resizable,
        })
    }

    /// This output at `mode`, changed in place (its app runs on); its screencast is a new node
    /// (fetch it with [`Output::screencast`]). A refusal leaves the output at its mode, or
    /// stopped when it gave no screencast at the new one (session says which).
    pub async fn resize(&self, mode: Mode) -> Result<Self, Refusal> {
        let mut session = connect(&self.runtime_dir).await?;
        let mut req = tonic::Request::new(ResizeOutputRequest {
            output_id: self.id.clone(),
            mode: Some(mode),
        });
        req.set_timeout(START_TIMEOUT);
        let reply = session
            .resize_output(req)
            .await
            .map_err(|s| Refusal {
                code: CODE_OUTPUT_FAILED,
                message: format!("the output did not change its mode: {}", s.message()),
            })?
            .into_inner();
        Ok(Self {
            mode: reply.mode.unwrap_or(mode),
            ..self.clone()
        })
    }

    /// A new output like this one at `mode`, with its own compositor and app (this one runs
    /// on until it is stopped). Backends cannot all resize a running output (a screencast
    /// node's buffers have one size), so a new mode is a new output.
    pub async fn like_at(&self, mode: Mode) -> Result<Self, Refusal> {
        Self::start(&self.runtime_dir, mode, &self.client, &self.app).await
    }

    /// A fresh ticket for the output's screencast (each media stream redeems its own).
    pub async fn screencast(&self) -> Result<Screencast, Refusal> {
        let mut session = connect(&self.runtime_dir).await?;
        let mut req = tonic::Request::new(OpenScreencastRequest {
            output_id: self.id.clone(),
        });
        req.set_timeout(CALL_TIMEOUT);
        let reply = session
            .open_screencast(req)
            .await
            .map_err(|s| Refusal {
                code: CODE_OUTPUT_FAILED,
                message: format!("the output's screencast cannot be opened: {}", s.message()),
            })?
            .into_inner();
        let ticket = reply.screencast.ok_or_else(|| Refusal {
            code: CODE_OUTPUT_FAILED,
            message: "the session manager sent no screencast ticket".into(),
        })?;
        Ok(Screencast {
            node_id: reply.pipewire_node_id,
            ticket,
            audio_sink: reply.audio_sink,
        })
    }

    /// Stops the output (its compositor, app and PipeWire); a failure is logged, the journal
    /// lets punktfunk-session clean up what is left.
    pub async fn stop(self) {
        let result = async {
            let mut session = connect(&self.runtime_dir).await?;
            let mut req = tonic::Request::new(StopOutputRequest {
                output_id: self.id.clone(),
            });
            req.set_timeout(Duration::from_secs(15));
            session
                .stop_output(req)
                .await
                .map_err(|s| unreachable(&self.runtime_dir, s.message()))
        }
        .await;
        match result {
            Ok(_) => tracing::info!(output = %self.id, "compositor output stopped"),
            Err(e) => tracing::warn!(output = %self.id, "stopping the output: {}", e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(text: &str) -> Apps {
        Apps::parse(Path::new("apps.toml"), text).unwrap()
    }

    #[test]
    fn apps_resolve_to_their_command_and_backend() {
        let apps =
            apps("[[app]]\ntitle = \"Steam\"\ncommand = [\"steam\"]\ncompositor = \"gamescope\"\n");
        let desktop = AppChoice::resolve(&apps, None, None).unwrap();
        assert_eq!(desktop.title, DESKTOP);
        assert!(desktop.command.is_empty());
        assert_eq!(desktop.backend, Backend::Unspecified);
        let tp = AppChoice::resolve(&apps, Some("test PATTERN"), Some("mutter")).unwrap();
        assert_eq!(tp.command, ["punktfunk-testpattern"]);
        assert_eq!(tp.backend, Backend::Mutter, "the client's compositor");
        let steam = AppChoice::resolve(&apps, Some("Steam"), Some("mutter")).unwrap();
        assert_eq!(steam.backend, Backend::Gamescope, "the app's own wins");
    }

    #[test]
    fn unknown_apps_and_backends_are_refused_with_their_codes() {
        let apps = apps("");
        let e = AppChoice::resolve(&apps, Some("Doom"), None).unwrap_err();
        assert_eq!(e.code, CODE_UNKNOWN_APP);
        assert!(e.message.contains("\"Test pattern\""), "{}", e.message);
        let e = AppChoice::resolve(&apps, None, Some("hyprland")).unwrap_err();
        assert_eq!(e.code, CODE_OUTPUT_FAILED);
        assert_eq!(backend_named("Sway"), Some(Backend::Sway));
        assert_eq!(backend_named("unspecified"), None);
    }
}
