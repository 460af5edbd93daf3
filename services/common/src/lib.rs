//! The punktfunk service runtime shared by every daemon and by `punktfunkctl`:
//!
//! - [`daemon`]: the life cycle (sockets → config → services → READY → watchdog → stop);
//! - [`config`]: `<daemon>.toml` + `PUNKTFUNK_*` overrides, precise errors, exit 78;
//! - [`logging`]: journald when stderr is the journal, stderr otherwise;
//! - [`notify`]: sd-notify READY/STATUS/WATCHDOG/STOPPING;
//! - [`activation`]: socket activation or self-bound 0600 sockets;
//! - [`uds`]: gRPC over Unix sockets with `SO_PEERCRED` checks, and the client connector;
//! - [`fdchannel`]: one-time tickets and SCM_RIGHTS over SOCK_SEQPACKET;
//! - [`health`], [`client`]: what `Health` reports and how to ask for it;
//! - [`paths`]: XDG locations;
//! - [`backends`]: the compositor backends and their version floors;
//! - [`apps`]: the launchable apps (`apps.toml`), shared by every protocol;
//! - [`alloc`]: bounding glibc's malloc arenas (call [`alloc::limit_arenas`] first in `main`);
//! - [`shm`]: memfd-backed shared pixel memory for `wl_shm` clients.

pub mod activation;
pub mod alloc;
pub mod apps;
pub mod backends;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fdchannel;
pub mod health;
pub mod logging;
pub mod notify;
pub mod paths;
pub mod shm;
pub mod uds;

/// The answer of a declared call whose job arrives with a later piece of work: gRPC
/// UNIMPLEMENTED with a message saying so, never a fake success.
pub fn not_yet(call: &str, arrives_with: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{call} is not implemented yet: it arrives with {arrives_with}"
    ))
}
