//! StartOutputRequest → [`StartSpec`]: everything a request may carry is checked here (mode
//! bounds, backend, sizes of the app's argv and environment), so the manager only sees valid
//! specs. Total: any decoded request gives a spec or an INVALID_ARGUMENT naming the field.

use punktfunk_proto::session::{Backend, StartOutputRequest};
use tonic::Status;

use crate::backend::{BackendKind, Mode};

/// At most this many app arguments.
pub const MAX_ARGS: usize = 256;
/// At most this many app environment variables.
pub const MAX_ENV: usize = 256;
/// Longest client name, app title, argument, variable name or value (bytes).
pub const MAX_TEXT: usize = 4096;

/// Checks a request; `default` is the configured backend for BACKEND_UNSPECIFIED.
pub fn start_spec(req: StartOutputRequest, default: BackendKind) -> Result<StartSpec, Status> {
    let mode = checked_mode(req.mode)?;
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

/// A request's mode, within the bounds every output's mode has (StartOutput, ResizeOutput).
pub fn checked_mode(m: Option<punktfunk_proto::common::Mode>) -> Result<Mode, Status> {
    let m =
        m.ok_or_else(|| Status::invalid_argument("mode is required (width, height, refresh)"))?;
    let mode = Mode {
        width: m.width,
        height: m.height,
        refresh_mhz: m.refresh_mhz,
    };
    mode.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(mode)
}

/// What StartOutput asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartSpec {
    /// The backend (resolved from the request or the configured default).
    pub backend: BackendKind,
    /// The mode.
    pub mode: Mode,
    /// Who it is for.
    pub client: String,
    /// The app's title.
    pub app_title: String,
    /// The app's argv (empty: none).
    pub app_command: Vec<String>,
    /// The app's extra environment, sorted by name.
    pub app_env: Vec<(String, String)>,
}

/// The backend a proto `Backend` value names (`default` for unspecified).
pub fn from_proto_backend(raw: i32, default: BackendKind) -> Result<BackendKind, Status> {
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

/// The proto value of a backend.
pub fn to_proto_backend(k: BackendKind) -> Backend {
    match k {
        BackendKind::Gamescope => Backend::Gamescope,
        BackendKind::Mutter => Backend::Mutter,
        BackendKind::Kwin => Backend::Kwin,
        BackendKind::Sway => Backend::Sway,
        BackendKind::Weston => Backend::Weston,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_proto::common::Mode as PMode;
    use punktfunk_proto::session::AppLaunch;

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
}
