//! Under systemd, each output moves into its own transient scope on the user manager
//! (`org.freedesktop.systemd1.Manager.StartTransientUnit` with `PIDs`), out of
//! punktfunk-session.service's cgroup: stopping or restarting the service (KillMode=
//! control-group) then leaves the outputs running, as the journal expects. Without systemd
//! (tests, development) the process group alone keeps them apart.
//!
//! "Under systemd" means `INVOCATION_ID` is set (systemd sets it for every service it starts).

use zbus::zvariant::Value;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const IFACE: &str = "org.freedesktop.systemd1.Manager";

/// True when this process is a systemd service.
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty())
}

/// The scope unit of output `id`.
pub fn unit_name(id: &str) -> String {
    format!("punktfunk-output-{id}.scope")
}

async fn manager() -> zbus::Result<zbus::Proxy<'static>> {
    let conn = zbus::Connection::session().await?;
    zbus::Proxy::new(&conn, DEST, PATH, IFACE).await
}

/// Moves `pids` into a new scope `unit`.
pub async fn start(unit: &str, description: &str, pids: &[u32]) -> zbus::Result<()> {
    let m = manager().await?;
    let props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(description)),
        ("PIDs", Value::from(pids.to_vec())),
        // Stop ends the group with SIGTERM, as StopOutput does.
        ("KillMode", Value::from("control-group")),
    ];
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    let _job: zbus::zvariant::OwnedObjectPath = m
        .call("StartTransientUnit", &(unit, "fail", props, aux))
        .await?;
    Ok(())
}

/// Stops scope `unit` (absent is fine: it ends by itself once its processes are gone).
pub async fn stop(unit: &str) {
    if let Ok(m) = manager().await {
        let r: zbus::Result<zbus::zvariant::OwnedObjectPath> =
            m.call("StopUnit", &(unit, "replace")).await;
        if let Err(e) = r {
            tracing::debug!(unit, error = %e, "StopUnit");
        }
    }
}
