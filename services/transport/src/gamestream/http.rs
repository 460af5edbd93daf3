//! The HTTP (base port) and HTTPS (base − 5) API servers (spec §3). One request per
//! connection (`Connection: close`, as Sunshine: some clients break on keep-alive); every
//! reply is HTTP 200 with the outcome in the XML `status_code`, except unknown verbs (404).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use punktfunk_tls::Fingerprint;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::pairing::{self, Attempt};
use super::{GameStream, PIN_WAIT, Pending, client_name, expire, lock};
use crate::session::Protocol;

/// Sunshine's version strings (spec §0.2): the negative 4th component unlocks every Sunshine
/// extension in the client library; major 7 selects SHA-256 pairing.
pub const APP_VERSION: &str = "7.1.431.-1";
/// Known-good for Moonlight-qt's compatibility check.
pub const GFE_VERSION: &str = "3.23.0.74";
/// `serverinfo` codec bits (spec §3.2).
const SCM_H264: u32 = 0x1;
const SCM_HEVC: u32 = 0x100;
/// Largest query string accepted (a client certificate in hex is ~2.3 KB).
const MAX_QUERY: usize = 4 * pairing::MAX_CLIENT_CERT_PEM;
/// At most this many query parameters.
const MAX_PARAMS: usize = 64;

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
        .max_buf_size(MAX_QUERY + 8 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "GameStream HTTP connection ended");
    }
}

/// A parsed query: lower-case keys, values as sent (hex and decimal need no decoding).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Self, &'static str> {
        if q.len() > MAX_QUERY {
            return Err("query too long");
        }
        let mut v = Vec::new();
        // Empty segments are skipped: moonlight-python sends `…&gcpersist=0&&corever=1`.
        for part in q.split('&').filter(|p| !p.is_empty()) {
            if v.len() == MAX_PARAMS {
                return Err("too many query parameters");
            }
            let (k, val) = part.split_once('=').unwrap_or((part, ""));
            v.push((k.to_ascii_lowercase(), val.to_string()));
        }
        Ok(Self(v))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(
    gs: &Arc<GameStream>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let query = match Query::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return xml(error_root(400, e, &path)),
    };
    let authorized = conn.https && gs.is_paired(conn.cert.as_deref());
    match (path.as_str(), conn.https) {
        ("serverinfo", false) => xml(serverinfo(gs, conn, false).await),
        ("serverinfo", true) if authorized => xml(serverinfo(gs, conn, true).await),
        ("pair", false) => xml(pair_http(gs, conn, &query).await),
        ("pair", true) if authorized => xml(paired_root(true)),
        ("unpair", false) => xml(unpair(gs, &query)),
        ("serverinfo" | "pair" | "applist" | "appasset" | "launch" | "resume" | "cancel", true)
            if !authorized =>
        {
            tracing::info!(remote = %conn.remote, verb = %path, "GameStream request from an unpaired client refused");
            xml(unauthorized(&path))
        }
        ("applist", true) => xml(applist(gs)),
        ("appasset", true) => appasset(gs, &query),
        ("launch" | "resume", true) => xml(error_root(
            503,
            "this host does not stream over GameStream yet (use the punktfunk client)",
            &path,
        )),
        ("cancel", true) => xml("<root status_code=\"200\"><cancel>1</cancel></root>".into()),
        _ => not_found(&path),
    }
}

fn xml(body: String) -> Response<Full<Bytes>> {
    reply(
        200,
        "application/xml",
        Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{body}"
        )),
    )
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

fn not_found(path: &str) -> Response<Full<Bytes>> {
    reply(
        404,
        "application/xml",
        Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<root status_code=\"404\" query=\"/{}\"/>",
            escape(path)
        )),
    )
}

/// XML text/attribute escaping.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn error_root(code: u16, message: &str, path: &str) -> String {
    format!(
        "<root status_code=\"{code}\" status_message=\"{}\" query=\"/{}\"/>",
        escape(message),
        escape(path)
    )
}

/// The XML 401 (spec §2.3): Moonlight treats it as "not paired" and falls back to HTTP.
fn unauthorized(path: &str) -> String {
    error_root(
        401,
        "The client is not authorized. Certificate verification failed.",
        path,
    )
}

fn paired_root(paired: bool) -> String {
    format!(
        "<root status_code=\"200\"><paired>{}</paired></root>",
        u8::from(paired)
    )
}

async fn serverinfo(gs: &GameStream, conn: &Conn, https: bool) -> String {
    let codecs = match &gs.host.runtime_dir {
        Some(dir) => crate::media::limits(dir).await.codecs,
        None => vec![punktfunk_proto::common::Codec::H264],
    };
    let hevc = codecs.contains(&punktfunk_proto::common::Codec::Hevc);
    let scm = SCM_H264 | if hevc { SCM_HEVC } else { 0 };
    let local_ip = match conn.local.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
    };
    let mut s = String::from("<root status_code=\"200\">");
    let mut field = |name: &str, value: &str| {
        s.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    };
    field("hostname", &gs.host.host_name);
    field("appversion", APP_VERSION);
    field("GfeVersion", GFE_VERSION);
    field("uniqueid", &gs.identity.unique_id);
    field("HttpsPort", &gs.ports.https().to_string());
    field("ExternalPort", &gs.ports.http.to_string());
    field("LocalIP", &local_ip);
    field("mac", "00:00:00:00:00:00");
    field("MaxLumaPixelsHEVC", if hevc { "1869449984" } else { "0" });
    field("ServerCodecModeSupport", &scm.to_string());
    field("PairStatus", if https { "1" } else { "0" });
    field("currentgame", "0");
    field("state", "SUNSHINE_SERVER_FREE");
    field("gputype", "software");
    s.push_str("</root>");
    s
}

fn applist(gs: &GameStream) -> String {
    let mut s = String::from("<root status_code=\"200\">");
    match load_apps(gs) {
        Ok(apps) => {
            for (i, app) in apps.list().iter().enumerate() {
                // IDs are 1-based positions: Moonlight-qt rejects a list with ID 0.
                s.push_str(&format!(
                    "<App><IsHdrSupported>0</IsHdrSupported><AppTitle>{}</AppTitle><ID>{}</ID></App>",
                    escape(&app.title),
                    i + 1
                ));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "apps file unusable; Moonlight sees no apps");
            return error_root(500, &e, "applist");
        }
    }
    s.push_str("</root>");
    s
}

fn load_apps(_gs: &GameStream) -> Result<punktfunk_common::apps::Apps, String> {
    let dir = punktfunk_common::paths::config_dir().map_err(|e| e.to_string())?;
    punktfunk_common::apps::Apps::load(&dir).map_err(|e| e.to_string())
}

fn appasset(gs: &GameStream, q: &Query) -> Response<Full<Bytes>> {
    let image = q
        .get("appid")
        .and_then(|id| id.parse::<usize>().ok())
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| load_apps(gs).ok()?.by_index(i)?.image.clone());
    match image.and_then(|p| std::fs::read(p).ok()) {
        Some(png) => reply(200, "image/png", Bytes::from(png)),
        None => xml(error_root(404, "no image for this app", "appasset")),
    }
}

/// `/unpair` over HTTP carries no certificate: it only drops a pending pairing (a client that
/// gave up, typically after it found the PIN wrong) — counted as a failed attempt.
fn unpair(gs: &GameStream, q: &Query) -> String {
    let id = q.get("uniqueid").unwrap_or_default();
    let dropped = {
        let mut st = lock(&gs.pairing);
        if st.pending.as_ref().is_some_and(|p| p.unique_id == id) {
            st.pending.take()
        } else {
            None
        }
    };
    if let Some(p) = dropped {
        // (fail() takes the lock again; it is released here.)
        let remote: SocketAddr = ([0, 0, 0, 0], 0).into();
        drop(p);
        gs.fail(
            remote,
            "the client gave up pairing (it found the PIN wrong, most likely)",
        );
    }
    "<root status_code=\"200\"/>".into()
}

/// The four HTTP phases of `/pair` (spec §3.3).
async fn pair_http(gs: &Arc<GameStream>, conn: &Conn, q: &Query) -> String {
    let unique_id = q.get("uniqueid").unwrap_or_default().to_string();
    if q.get("phrase") == Some("getservercert") {
        return getservercert(gs, conn, q, unique_id).await;
    }
    let step = {
        let mut st = lock(&gs.pairing);
        expire(&mut st, Instant::now());
        match st.pending.as_mut() {
            Some(p) if p.unique_id == unique_id => Some(next_phase(gs, &mut p.attempt, q)),
            _ => None,
        }
    };
    match step {
        None => {
            tracing::info!(remote = %conn.remote, "GameStream pairing phase without a pending attempt");
            paired_root(false)
        }
        Some(Ok(Step::Reply(body))) => body,
        Some(Ok(Step::Paired(cert))) => finish(gs, conn, cert),
        Some(Err(e)) => {
            gs.fail(conn.remote, &e.to_string());
            paired_root(false)
        }
    }
}

enum Step {
    Reply(String),
    Paired(Vec<u8>),
}

/// Phases 2-4 on the pending attempt.
fn next_phase(gs: &GameStream, a: &mut Attempt, q: &Query) -> Result<Step, pairing::PairingError> {
    if let Some(c) = q.get("clientchallenge") {
        let random = [rand::random::<[u8; 16]>(), rand::random::<[u8; 16]>()];
        let reply = a.client_challenge(c, &gs.identity.cert_signature, random)?;
        return Ok(Step::Reply(format!(
            "<root status_code=\"200\"><paired>1</paired><challengeresponse>{}</challengeresponse></root>",
            pairing::hex(&reply)
        )));
    }
    if let Some(r) = q.get("serverchallengeresp") {
        let secret = a.server_challenge_response(r)?;
        let mut blob = secret.to_vec();
        blob.extend_from_slice(&gs.identity.sign(&secret));
        return Ok(Step::Reply(format!(
            "<root status_code=\"200\"><paired>1</paired><pairingsecret>{}</pairingsecret></root>",
            pairing::hex(&blob)
        )));
    }
    if let Some(s) = q.get("clientpairingsecret") {
        a.client_pairing_secret(s)?;
        return Ok(Step::Paired(a.client_cert.to_vec()));
    }
    Err(pairing::PairingError::Malformed("unknown pairing phase"))
}

/// Stores the newly paired certificate (memory changes only after the file is written).
fn finish(gs: &GameStream, conn: &Conn, cert: Vec<u8>) -> String {
    lock(&gs.pairing).pending = None;
    let fp = Fingerprint::of(&cert);
    let name = client_name(&fp);
    let ok = match gs.host.add_paired(fp, &name, Protocol::GameStream.as_str()) {
        Ok(_) => {
            tracing::info!(remote = %conn.remote, client = %name, fingerprint = %fp.short(), "Moonlight client paired");
            lock(&gs.pairing).failures = 0;
            true
        }
        Err(e) => {
            tracing::error!(client = %name, "pairing not stored: {e}");
            false
        }
    };
    gs.refresh_status();
    paired_root(ok)
}

/// Phase 1: registers the attempt, then holds the request open until the PIN is typed on the
/// host (both Moonlight clients wait without a timeout), or [`PIN_WAIT`] passes.
async fn getservercert(gs: &Arc<GameStream>, conn: &Conn, q: &Query, unique_id: String) -> String {
    let attempt = match Attempt::start(
        q.get("salt").unwrap_or_default(),
        q.get("clientcert").unwrap_or_default(),
    ) {
        Ok(a) => a,
        Err(e) => {
            gs.fail(conn.remote, &e.to_string());
            return paired_root(false);
        }
    };
    let (tx, rx) = oneshot::channel();
    let refused = {
        let mut st = lock(&gs.pairing);
        let now = Instant::now();
        expire(&mut st, now);
        if st.locked_until.is_some() {
            Some("pairing is locked after repeated failures; try again in a minute")
        } else if st.pending.is_some() {
            Some("another Moonlight client is pairing")
        } else {
            st.pending = Some(Pending {
                unique_id: unique_id.clone(),
                attempt,
                started: now,
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                pin_tx: Some(tx),
            });
            None
        }
    };
    if let Some(why) = refused {
        tracing::warn!(remote = %conn.remote, "GameStream pairing refused: {why}");
        return paired_root(false);
    }
    tracing::info!(remote = %conn.remote, "Moonlight pairing waits for its PIN: punktfunkctl pair --pin NNNN");
    gs.refresh_status();
    let pin = tokio::time::timeout(PIN_WAIT, rx).await;
    let keyed = {
        let mut st = lock(&gs.pairing);
        match (pin, st.pending.as_mut()) {
            (Ok(Ok(pin)), Some(p)) if p.unique_id == unique_id => p.attempt.set_pin(&pin).is_ok(),
            _ => false,
        }
    };
    gs.refresh_status();
    if !keyed {
        lock(&gs.pairing).pending = None;
        tracing::info!(remote = %conn.remote, "Moonlight pairing got no PIN in time");
        return paired_root(false);
    }
    format!(
        "<root status_code=\"200\"><paired>1</paired><plaincert>{}</plaincert></root>",
        pairing::hex(gs.identity.cert_pem.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_skip_empty_segments_and_bound_their_size() {
        let q = Query::parse("uniqueid=0123&&corever=1&Salt=AB&flag").unwrap();
        assert_eq!(q.get("uniqueid"), Some("0123"));
        assert_eq!(q.get("corever"), Some("1"));
        assert_eq!(q.get("salt"), Some("AB"), "keys are case-insensitive");
        assert_eq!(q.get("flag"), Some(""));
        assert!(Query::parse(&"a".repeat(MAX_QUERY + 1)).is_err());
        assert!(Query::parse(&"a=1&".repeat(MAX_PARAMS + 1)).is_err());
    }

    #[test]
    fn the_401_is_the_xml_moonlight_expects() {
        assert_eq!(
            unauthorized("applist"),
            "<root status_code=\"401\" status_message=\"The client is not authorized. Certificate verification failed.\" query=\"/applist\"/>"
        );
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
