//! The HTTP (base port) and HTTPS (base − 5) API servers (spec §3). One request per
//! connection (`Connection: close`, as Sunshine: some clients break on keep-alive); every
//! reply is HTTP 200 with the outcome in the XML `status_code`, except unknown verbs (404).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use punktfunk_gamestream::http::{MAX_TARGET_LEN, Query, Verb, parse_target};
use punktfunk_gamestream::pairing::{PairStep, PinPoll};
use punktfunk_gamestream::xml;

use super::{GameStream, now};

/// How often a held phase-1 request looks at the pairing machine besides being woken by a
/// typed PIN (its deadlines are in the machine; this only bounds how late they are noticed).
const PIN_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Per-connection facts a reply depends on.
#[derive(Clone)]
struct Conn {
    remote: SocketAddr,
    local: SocketAddr,
    https: bool,
    /// The client certificate presented on HTTPS (DER).
    cert: Option<Vec<u8>>,
}

/// Accepts connections until the listener fails.
pub async fn serve(
    gs: Arc<GameStream>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "GameStream accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = tcp.local_addr().unwrap_or(remote);
        let gs = gs.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = Conn {
                        remote,
                        local,
                        https: false,
                        cert: None,
                    };
                    serve_conn(gs, tcp, conn).await;
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec());
                        let conn = Conn {
                            remote,
                            local,
                            https: true,
                            cert,
                        };
                        serve_conn(gs, stream, conn).await;
                    }
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "GameStream TLS handshake failed")
                    }
                },
            }
        });
    }
}

async fn serve_conn<I>(gs: Arc<GameStream>, io: I, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = conn.remote;
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let gs = gs.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(&gs, &conn, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_TARGET_LEN + 16 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "GameStream HTTP connection ended");
    }
}

async fn handle(
    gs: &Arc<GameStream>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let path = req.uri().path().to_string();
    let (verb, query) = match parse_target(target) {
        Ok(v) => v,
        Err(e) => return xml_reply(xml::error(400, &e.to_string())),
    };
    let authorized = conn.https && gs.is_paired(conn.cert.as_deref());
    if conn.https && !authorized && verb != Verb::Pair && verb != Verb::Unknown {
        tracing::info!(remote = %conn.remote, verb = %path, "GameStream request from an unpaired client refused");
        return xml_reply(xml::unauthorized(&path));
    }
    if !conn.https && !verb.served_over_http() {
        return xml_reply(xml::unauthorized(&path));
    }
    match verb {
        Verb::ServerInfo => xml_reply(serverinfo(gs, conn, authorized).await),
        Verb::Pair => xml_reply(pair(gs, conn, &query, authorized).await),
        Verb::Unpair => {
            let id = query.get("uniqueid").unwrap_or_default().to_string();
            gs.with_pairing(|p| p.handle_unpair(now(), &id));
            xml_reply(xml::unpair())
        }
        Verb::AppList => xml_reply(applist()),
        Verb::AppAsset => appasset(&query),
        Verb::Launch | Verb::Resume => {
            xml_reply(launch(gs, conn, &query, verb == Verb::Resume).await)
        }
        Verb::Cancel => {
            gs.cancel().await;
            xml_reply(xml::cancel())
        }
        Verb::Unknown => reply(404, xml::HTTP_CONTENT_TYPE, Bytes::from(xml::not_found())),
    }
}

fn xml_reply(body: String) -> Response<Full<Bytes>> {
    reply(200, xml::HTTP_CONTENT_TYPE, Bytes::from(body))
}

fn reply(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let headers = r.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        headers.insert(hyper::header::CONTENT_TYPE, v);
    }
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// `/launch` and `/resume`: keeps the session keys and mode, answers with the RTSP URL on the
/// address the request arrived on. One launch at a time (a second client must `/cancel`).
async fn launch(gs: &GameStream, conn: &Conn, q: &Query, resume: bool) -> String {
    let req = match punktfunk_gamestream::http::LaunchRequest::from_query(q, resume) {
        Ok(r) => r,
        Err(e) => return xml::error(400, &e.to_string()),
    };
    let codecs = codec_support(gs).await;
    let url = xml::session_url(conn.local.ip(), gs.ports.rtsp());
    let Some(client) = conn.cert.as_deref().map(punktfunk_tls::Fingerprint::of) else {
        return xml::unauthorized("/launch");
    };
    // Decided under the lock (a std guard: no await inside), acted on after.
    let (reply, replaced) = {
        let mut current = super::lock(&gs.launch);
        match (current.as_ref(), resume) {
            (Some(l), true) => {
                // A resume keeps the app, with the new keys; the old launch's stream (if the
                // client left without its ENet disconnect arriving) stops below.
                let next =
                    super::stream::Launch::new(gs, l.app_id, l.mode, req.keys, codecs, client);
                (xml::resume(&url), current.replace(Arc::new(next)))
            }
            (None, true) => (xml::error(400, "nothing is running: launch an app"), None),
            (Some(_), false) => (
                xml::error(400, "an app is running: resume it or quit it first"),
                None,
            ),
            (None, false) => {
                let app_id = req.app_id.unwrap_or(1);
                let next =
                    super::stream::Launch::new(gs, app_id, req.mode, req.keys, codecs, client);
                *current = Some(Arc::new(next));
                tracing::info!(app_id, mode = ?req.mode, "Moonlight launch");
                (xml::launch(&url), None)
            }
        }
    };
    if let Some(old) = replaced {
        old.stop(&gs.host).await;
    }
    gs.refresh_status();
    reply
}

/// What media's encoder ladder really produces here.
async fn codec_support(gs: &GameStream) -> xml::CodecSupport {
    let codecs = match &gs.host.runtime_dir {
        Some(dir) => crate::media::limits(dir).await.codecs,
        None => vec![punktfunk_proto::common::Codec::H264],
    };
    xml::CodecSupport {
        h264: true,
        hevc: codecs.contains(&punktfunk_proto::common::Codec::Hevc),
        ..xml::CodecSupport::default()
    }
}

async fn serverinfo(gs: &GameStream, conn: &Conn, paired: bool) -> String {
    let codecs = codec_support(gs).await;
    let local_ip = match conn.local.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
    };
    xml::server_info(&xml::ServerInfo {
        hostname: gs.host.host_name.clone(),
        unique_id: gs.unique_id.clone(),
        https_port: gs.ports.https(),
        external_port: gs.ports.http,
        local_ip,
        mac: None,
        codecs,
        display_modes: Vec::new(),
        paired,
        current_game: gs.current_launch().map(|l| l.app_id),
        gpu_type: "software".into(),
    })
}

fn load_apps() -> Result<punktfunk_common::apps::Apps, String> {
    let dir = punktfunk_common::paths::config_dir().map_err(|e| e.to_string())?;
    punktfunk_common::apps::Apps::load(&dir).map_err(|e| e.to_string())
}

/// The app Moonlight calls `id`: IDs are 1-based positions in the apps file (Moonlight-qt
/// rejects ID 0).
pub(super) fn app_by_id(id: u32) -> Option<punktfunk_common::apps::App> {
    let index = usize::try_from(id).ok()?.checked_sub(1)?;
    load_apps().ok()?.by_index(index).cloned()
}

/// The shared apps file, with the IDs [`app_by_id`] resolves.
fn applist() -> String {
    match load_apps() {
        Ok(apps) => {
            let entries: Vec<xml::AppEntry> = apps
                .list()
                .iter()
                .zip(1u32..)
                .map(|(a, id)| xml::AppEntry {
                    id,
                    title: a.title.clone(),
                    hdr: false,
                })
                .collect();
            xml::app_list(&entries)
        }
        Err(e) => {
            tracing::warn!(error = %e, "apps file unusable; Moonlight sees no apps");
            xml::error(500, &e)
        }
    }
}

fn appasset(q: &Query) -> Response<Full<Bytes>> {
    let image = q
        .get("appid")
        .and_then(|id| id.parse::<u32>().ok())
        .and_then(app_by_id)
        .and_then(|a| a.image);
    match image.and_then(|p| std::fs::read(p).ok()) {
        Some(png) => reply(200, xml::PNG_CONTENT_TYPE, Bytes::from(png)),
        None => xml_reply(xml::error(404, "no image for this app")),
    }
}

/// `/pair`: phases 1-4 over HTTP, `pairchallenge` over HTTPS. Phase 1 is held open until the
/// PIN is typed on the host (or the machine's deadline passes); phase 4's success is stored
/// before the client hears it.
async fn pair(gs: &Arc<GameStream>, conn: &Conn, q: &Query, authorized: bool) -> String {
    let https = conn.https.then_some(authorized);
    let (step, paired) = gs.with_pairing_paired(|p| p.handle_pair(now(), q, https));
    // Phase 4 verified the client: it is trusted once stored, and told so only then.
    for c in paired {
        if !gs.store_paired(&c.cert_der) {
            return xml::pair_failed("the host could not store the pairing");
        }
    }
    match step {
        PairStep::Reply(body) => body,
        PairStep::AwaitPin(id) => loop {
            // Registered before polling, so a PIN typed in between is not missed.
            let typed = gs.pin_typed.notified();
            match gs.with_pairing(|p| p.poll_pending(now(), id)) {
                PinPoll::Reply(body) => break body,
                PinPoll::Waiting => {
                    let _ = tokio::time::timeout(PIN_POLL, typed).await;
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_401_is_the_xml_moonlight_expects() {
        assert!(xml::unauthorized("/applist").contains(
            "<root status_code=\"401\" status_message=\"The client is not authorized. Certificate verification failed.\" query=\"/applist\"/>"
        ));
    }
}
