//! A pairing stream: one SPAKE2 ceremony against the armed PIN (`punktfunk-control`'s
//! [`PairingHost`]), then the client's fingerprint is stored as trusted.

use std::time::{Duration, Instant};

use punktfunk_control::pairing::{Paired, PairingError, PairingHost, PairingHostStep};
use punktfunk_proto::control::{ClientMessage, HostMessage, client_message};
use punktfunk_quic::RecvError;
use punktfunk_tls::Fingerprint;

use super::{Reader, Stream, close};
use crate::session::Protocol;

/// Runs the ceremony that `first` (a `PairStart`) began. Every failure is logged, counted and
/// told to the client.
pub(super) async fn run(mut s: Stream, mut reader: Reader, first: ClientMessage) {
    let client_name = match &first.msg {
        Some(client_message::Msg::PairStart(p)) => p.client_name.clone(),
        _ => String::new(),
    };
    let remote = s.conn.remote_address();
    let host = s.host.clone();
    let failed = |reason: &str| host.pairing_failed(remote, &client_name, reason);
    // One attempt per armed PIN: taking it closes the window, right or wrong. The status line
    // is refreshed after the window's lock is released (Host never nests its locks).
    let taken = host.take_pin(Instant::now());
    host.refresh_status();
    let pin = match taken {
        Ok(pin) => pin,
        Err(closed) => {
            // (`pairing_failed` refreshes the status line with the new count.)
            failed(&closed.to_string());
            let m = PairingError::Rejected(closed.to_string()).to_host_message(&host.host_name);
            s.refuse(m, close::PAIRING_FAILED, "pairing not armed")
                .await;
            return;
        }
    };
    let mut machine = match PairingHost::new(
        &pin,
        host.identity.fingerprint.0,
        s.fp.0,
        host.host_name.clone(),
    ) {
        Ok(m) => m,
        Err(e) => {
            failed(&e.to_string());
            refuse(&mut s, &e).await;
            return;
        }
    };
    let mut msg = first;
    loop {
        match machine.on_message(msg) {
            Ok(PairingHostStep::Reply(reply)) => {
                if s.send(&reply).await.is_err() {
                    failed("the client left during the ceremony");
                    return;
                }
            }
            Ok(PairingHostStep::Paired { reply, client }) => {
                finish(&mut s, reply, client).await;
                return;
            }
            Err(e) => {
                failed(&e.to_string());
                refuse(&mut s, &e).await;
                return;
            }
        }
        msg = match reader.next().await {
            Ok(Some(m)) => m,
            Err(RecvError::Malformed(e)) => {
                let why = format!("malformed pairing message: {e}");
                failed(&why);
                refuse(&mut s, &PairingError::Rejected(why)).await;
                return;
            }
            // A client that finds the host's confirmation wrong (a wrong PIN, or someone in
            // between) does not confirm: it closes the connection (its close reason says so
            // when the close frame arrives; otherwise the idle timeout ends the wait).
            Ok(None) => {
                failed("the client did not confirm (a wrong PIN, most likely)");
                return;
            }
            Err(e @ RecvError::Lost(_)) => {
                failed(&format!(
                    "the client did not confirm (a wrong PIN, most likely): {e}"
                ));
                return;
            }
        };
    }
}

/// Ends a failed pairing attempt with the ceremony's own words.
async fn refuse(s: &mut Stream, e: &PairingError) {
    let m = e.to_host_message(&s.host.host_name);
    s.refuse(m, close::PAIRING_FAILED, "pairing failed").await;
}

/// Stores a client whose ceremony succeeded, then tells it so; a failed write refuses it
/// (nothing was admitted: the store changes memory only after the file is written).
async fn finish(s: &mut Stream, reply: HostMessage, client: Paired) {
    let client_fp = Fingerprint(client.client_fp);
    match s
        .host
        .add_paired(client_fp, &client.client_name, Protocol::Native.as_str())
    {
        Ok(c) => {
            tracing::info!(client = %c.name, fingerprint = %client_fp.short(), "paired");
            let _ = s.send(&reply).await;
            let _ = s.send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), s.send.stopped()).await;
        }
        Err(e) => {
            tracing::error!(client = %client.client_name, "pairing not stored: {e}");
            let why = format!("the host could not store the pairing: {e}");
            refuse(s, &PairingError::Rejected(why)).await;
        }
    }
}
