//! The life of a punktfunk daemon, shared by all four:
//!
//! 1. take the listening sockets (activation or bind) — first, before any thread exists;
//! 2. log to journald or stderr, load and validate the config (invalid → exit 78);
//! 3. start the fd channel thread and the gRPC server with the daemon's services;
//! 4. call our own `Health` over our own socket, and only then send `READY=1` — so READY means
//!    "a client can be served now", not "the process got far enough to say so";
//! 5. main loop: `WATCHDOG=1` at half of `WATCHDOG_USEC`, STATUS on every status change, until
//!    SIGTERM/SIGINT; then `STOPPING=1`, graceful shutdown, exit 0 within 5 s.
//!
//! If the gRPC server ends on its own the daemon exits non-zero, so systemd restarts it.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tonic::service::Routes;

use crate::activation::{self, Listeners, Origin};
use crate::config::{self, DaemonConfig, EX_CONFIG};
use crate::fdchannel::TicketBook;
use crate::health::Health;
use crate::notify::{self, Notifier};
use crate::{client, logging, paths, uds};

/// Exit code for a daemon that cannot obtain its sockets (sysexits `EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: u8 = 69;
/// Exit code for a runtime failure after start-up (sysexits `EX_SOFTWARE`).
pub const EX_SOFTWARE: u8 = 70;
/// How long shutdown waits for in-flight calls before exiting anyway (systemd allows more).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a daemon's services get to work with.
pub struct Context<C> {
    /// The daemon's short name (`session`, `media`, ...).
    pub name: &'static str,
    /// The daemon's validated configuration.
    pub config: Arc<C>,
    /// The daemon's health state, served over gRPC and sd_notify.
    pub health: Arc<Health>,
    /// Tickets for fds handed out through this daemon's fd channel.
    pub tickets: Arc<TicketBook>,
    /// `$XDG_RUNTIME_DIR/punktfunk`, where the other daemons' sockets are.
    pub runtime_dir: Option<PathBuf>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs daemon `name`: `build` registers its gRPC services (and may spawn its own tasks).
pub fn run<C, F, Fut>(name: &'static str, build: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(Context<C>) -> Fut,
    Fut: Future<Output = Result<Routes, BoxError>>,
{
    // Sockets first: this unsets LISTEN_* and must happen before any thread exists.
    let listeners = activation::take_listeners(name);
    logging::init(name);
    let listeners = match listeners {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let loaded = match paths::config_dir()
        .map_err(|e| config::ConfigError {
            source: "the environment".into(),
            key: None,
            message: e.to_string(),
        })
        .and_then(|dir| config::load::<C>(&dir, name))
    {
        Ok(l) => l,
        Err(e) => {
            log_config_error(&e);
            activation::remove_bound(&listeners.origin);
            return ExitCode::from(EX_CONFIG);
        }
    };
    tracing::info!(
        config = %loaded.file.display(),
        file_existed = loaded.file_existed,
        overrides = ?loaded.overrides,
        activated = listeners.origin == Origin::Activated,
        "punktfunk-{name} {} starting",
        env!("CARGO_PKG_VERSION"),
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{name}-rt"))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let origin = listeners.origin.clone();
    let code = runtime.block_on(serve(name, Arc::new(loaded.config), listeners, build));
    activation::remove_bound(&origin);
    // Do not wait for blocking tasks (an fd-channel peer, a stuck call): exit is the deadline.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Logs an invalid configuration; the key is a field only when one is to blame.
fn log_config_error(e: &config::ConfigError) {
    match &e.key {
        Some(key) => tracing::error!(key = %key, "{e}"),
        None => tracing::error!("{e}"),
    }
}

async fn serve<C, F, Fut>(
    name: &'static str,
    config: Arc<C>,
    listeners: Listeners,
    build: F,
) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(Context<C>) -> Fut,
    Fut: Future<Output = Result<Routes, BoxError>>,
{
    let notifier = Notifier::new();
    let health = Arc::new(Health::new(name));
    let tickets = TicketBook::new(Duration::from_millis(config.ipc().ticket_ttl_ms));
    let Listeners {
        grpc,
        fds,
        grpc_path,
        ..
    } = listeners;

    // Signals are registered before READY so a SIGTERM right after start is not lost.
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(EX_SOFTWARE);
        }
    };

    if let Err(e) = crate::fdchannel::spawn_server(fds, tickets.clone(), name) {
        tracing::error!(error = %e, "cannot start the fd channel");
        return ExitCode::from(EX_SOFTWARE);
    }

    let ctx = Context {
        name,
        config,
        health: health.clone(),
        tickets,
        runtime_dir: paths::runtime_dir().ok(),
    };
    let routes = match build(ctx).await {
        Ok(r) => r,
        // The daemon's files or settings are at fault: a restart would fail the same way.
        Err(e) if e.downcast_ref::<config::ConfigError>().is_some() => {
            if let Some(c) = e.downcast_ref::<config::ConfigError>() {
                log_config_error(c);
            }
            return ExitCode::from(EX_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the service");
            return ExitCode::from(EX_SOFTWARE);
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(uds::serve(grpc, routes, async {
        let _ = stop_rx.await;
    }));

    // Readiness: our own Health call over our own socket must succeed.
    // (An activated socket without a path — abstract namespace — cannot be dialled; systemd
    // never passes one for our units.)
    if let Some(path) = &grpc_path
        && let Err(e) = client::probe(path, name, PROBE_TIMEOUT).await
    {
        tracing::error!(error = %e, "readiness probe over our own socket failed");
        return ExitCode::from(EX_SOFTWARE);
    }
    health.set_serving(true);
    if health.status() == "starting" {
        health.set_status("ready");
    }
    let mut status_rx = health.subscribe();
    let first = status_rx.borrow_and_update().clone();
    notifier.ready(&first);
    tracing::info!(status = %first, "ready");

    let watchdog = notify::watchdog_interval();
    let mut ticker = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = ticker.tick(), if watchdog.is_some() => notifier.watchdog(),
            changed = status_rx.changed() => {
                if changed.is_ok() {
                    let line = status_rx.borrow_and_update().clone();
                    notifier.status(&line);
                }
            }
            res = &mut server => {
                let why = match res {
                    Ok(Ok(())) => "the gRPC server stopped unexpectedly".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the gRPC server task failed: {e}"),
                };
                tracing::error!("{why}; exiting so the service manager restarts us");
                return ExitCode::from(EX_SOFTWARE);
            }
        }
    };

    health.set_serving(false);
    notifier.stopping(&format!("stopping ({reason})"));
    tracing::info!(reason, "stopping");
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(_) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!(
            "in-flight calls did not finish within {SHUTDOWN_GRACE:?}; exiting anyway"
        ),
    }
    ExitCode::SUCCESS
}
