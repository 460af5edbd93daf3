//! The XML replies of the HTTP API. Every reply is one `<root status_code="N" ...>` element;
//! the clients decide success from `status_code` alone, so application errors keep HTTP
//! status 200 (see [`HTTP_CONTENT_TYPE`]).

use crate::{APP_VERSION, GFE_VERSION};
use std::fmt::Write as _;

/// `Content-Type` of every XML reply.
pub const HTTP_CONTENT_TYPE: &str = "application/xml";
/// `Content-Type` of `/appasset` (box art).
pub const PNG_CONTENT_TYPE: &str = "image/png";
/// The message of the XML 401 for an unpaired certificate (what Sunshine sends).
pub const UNAUTHORIZED_MESSAGE: &str =
    "The client is not authorized. Certificate verification failed.";
/// `MaxLumaPixelsHEVC` when HEVC can be encoded (what Sunshine sends).
pub const MAX_LUMA_PIXELS_HEVC: u64 = 1_869_449_984;

const PROLOG: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all: drop them.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Builds `<root status_code="..."> children </root>`.
struct Root {
    out: String,
}

impl Root {
    fn new(status: u16, message: Option<&str>) -> Self {
        let mut out = String::from(PROLOG);
        let _ = write!(out, r#"<root status_code="{status}""#);
        if let Some(m) = message {
            let _ = write!(out, r#" status_message="{}""#, escape(m));
        }
        out.push('>');
        Self { out }
    }

    fn el(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        let v = escape(&value.to_string());
        let _ = write!(self.out, "<{name}>{v}</{name}>");
        self
    }

    fn raw(mut self, s: &str) -> Self {
        self.out.push_str(s);
        self
    }

    fn finish(mut self) -> String {
        self.out.push_str("</root>");
        self.out
    }
}

/// Codecs this host can really encode (from media's encoder ladder), advertised in
/// `/serverinfo` and RTSP DESCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSupport {
    /// H.264 (always required by the clients).
    pub h264: bool,
    /// HEVC Main.
    pub hevc: bool,
    /// HEVC Main10 (10-bit/HDR).
    pub hevc_main10: bool,
    /// AV1 Main 8-bit.
    pub av1: bool,
    /// AV1 Main 10-bit.
    pub av1_main10: bool,
}

impl Default for CodecSupport {
    fn default() -> Self {
        Self {
            h264: true,
            hevc: false,
            hevc_main10: false,
            av1: false,
            av1_main10: false,
        }
    }
}

impl CodecSupport {
    /// `ServerCodecModeSupport`: 0x1 H.264 (always set, the clients refuse 0), 0x100 HEVC,
    /// 0x200 HEVC Main10, 0x10000 AV1 Main8, 0x20000 AV1 Main10.
    pub fn mode_bits(&self) -> u32 {
        let mut m = 0x1;
        if self.hevc {
            m |= 0x100;
        }
        if self.hevc && self.hevc_main10 {
            m |= 0x200;
        }
        if self.av1 {
            m |= 0x10000;
        }
        if self.av1 && self.av1_main10 {
            m |= 0x20000;
        }
        m
    }

    /// `MaxLumaPixelsHEVC` (Moonlight-qt drops HEVC when it is 0).
    pub fn max_luma_pixels_hevc(&self) -> u64 {
        if self.hevc { MAX_LUMA_PIXELS_HEVC } else { 0 }
    }
}

/// Everything `/serverinfo` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Display name of the host.
    pub hostname: String,
    /// Stable host id (a UUID persisted once).
    pub unique_id: String,
    /// The HTTPS port.
    pub https_port: u16,
    /// The HTTP port as seen from outside.
    pub external_port: u16,
    /// The IPv4 address the request arrived on (`127.0.0.1` for IPv6 requests).
    pub local_ip: String,
    /// The MAC address for Wake-on-LAN; `None` sends all zeros (always so over plain HTTP).
    pub mac: Option<String>,
    /// Codecs we can encode.
    pub codecs: CodecSupport,
    /// Display modes to list (width, height, refresh rate).
    pub display_modes: Vec<(u32, u32, u32)>,
    /// The request came over HTTPS with a paired certificate.
    pub paired: bool,
    /// The running app's id, if a session/app is running.
    pub current_game: Option<u32>,
    /// GPU description (display only).
    pub gpu_type: String,
}

/// `/serverinfo` reply.
pub fn server_info(info: &ServerInfo) -> String {
    let mac = match (&info.mac, info.paired) {
        (Some(m), true) => m.as_str(),
        _ => "00:00:00:00:00:00",
    };
    let mut modes = String::from("<SupportedDisplayMode>");
    for (w, h, r) in &info.display_modes {
        let _ = write!(
            modes,
            "<DisplayMode><Width>{w}</Width><Height>{h}</Height><RefreshRate>{r}</RefreshRate></DisplayMode>"
        );
    }
    modes.push_str("</SupportedDisplayMode>");
    let busy = info.current_game.is_some();
    Root::new(200, None)
        .el("hostname", &info.hostname)
        .el("appversion", APP_VERSION)
        .el("GfeVersion", GFE_VERSION)
        .el("uniqueid", &info.unique_id)
        .el("HttpsPort", info.https_port)
        .el("ExternalPort", info.external_port)
        .el("MaxLumaPixelsHEVC", info.codecs.max_luma_pixels_hevc())
        .el("mac", mac)
        .el("LocalIP", &info.local_ip)
        .el("ServerCodecModeSupport", info.codecs.mode_bits())
        .raw(&modes)
        .el("PairStatus", u8::from(info.paired))
        .el("currentgame", info.current_game.unwrap_or(0))
        .el(
            "state",
            if busy {
                "SUNSHINE_SERVER_BUSY"
            } else {
                "SUNSHINE_SERVER_FREE"
            },
        )
        .el("gputype", &info.gpu_type)
        .finish()
}

/// A `/pair` reply: `paired` plus the phase's extra element (e.g. `plaincert`).
pub fn pair_reply(paired: bool, extra: Option<(&str, &str)>) -> String {
    let mut r = Root::new(200, None).el("paired", u8::from(paired));
    if let Some((name, value)) = extra {
        r = r.el(name, value);
    }
    r.finish()
}

/// A failed `/pair` phase (`paired` 0, status 400 with a message, as Sunshine does).
pub fn pair_failed(message: &str) -> String {
    Root::new(400, Some(message)).el("paired", 0).finish()
}

/// One entry of `/applist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    /// Non-zero id (Moonlight-qt rejects the whole list for id 0).
    pub id: u32,
    /// Title the clients show and match.
    pub title: String,
    /// The app can stream HDR.
    pub hdr: bool,
}

/// `/applist` reply. Entries with id 0 are left out (they would void the whole list).
pub fn app_list(apps: &[AppEntry]) -> String {
    let mut r = Root::new(200, None);
    for a in apps.iter().filter(|a| a.id != 0) {
        r = r.raw(&format!(
            "<App><IsHdrSupported>{}</IsHdrSupported><AppTitle>{}</AppTitle><ID>{}</ID></App>",
            u8::from(a.hdr),
            escape(&a.title),
            a.id
        ));
    }
    r.finish()
}

/// `/launch` reply; `session_url` is `rtsp://<addr>:<port>` (IPv6 in brackets).
pub fn launch(session_url: &str) -> String {
    Root::new(200, None)
        .el("sessionUrl0", session_url)
        .el("gamesession", 1)
        .finish()
}

/// `/resume` reply.
pub fn resume(session_url: &str) -> String {
    Root::new(200, None)
        .el("sessionUrl0", session_url)
        .el("resume", 1)
        .finish()
}

/// `/cancel` reply.
pub fn cancel() -> String {
    Root::new(200, None).el("cancel", 1).finish()
}

/// `/unpair` reply (a harmless 200).
pub fn unpair() -> String {
    Root::new(200, None).finish()
}

/// The XML 401 for an HTTPS request without a paired certificate (sent with HTTP status 200).
pub fn unauthorized(path: &str) -> String {
    let mut out = String::from(PROLOG);
    let _ = write!(
        out,
        r#"<root status_code="401" status_message="{}" query="{}"/>"#,
        escape(UNAUTHORIZED_MESSAGE),
        escape(path)
    );
    out
}

/// An application error (`status` e.g. 400 bad request, 503 cannot start), HTTP status 200.
pub fn error(status: u16, message: &str) -> String {
    Root::new(status, Some(message)).finish()
}

/// An unknown verb.
pub fn not_found() -> String {
    error(404, "Not found")
}

/// `sessionUrl0` for RTSP at `host:port`: IPv6 addresses go in brackets.
pub fn session_url(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V4(a) => format!("rtsp://{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("rtsp://[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ServerInfo {
        ServerInfo {
            hostname: "my<host>".into(),
            unique_id: "5c2d-uuid".into(),
            https_port: 47984,
            external_port: 47989,
            local_ip: "192.168.1.10".into(),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            codecs: CodecSupport {
                hevc: true,
                ..Default::default()
            },
            display_modes: vec![(1920, 1080, 60)],
            paired: true,
            current_game: None,
            gpu_type: "x".into(),
        }
    }

    #[test]
    fn serverinfo_matches_the_spec_example() {
        let x = server_info(&info());
        for needle in [
            r#"<root status_code="200">"#,
            "<hostname>my&lt;host&gt;</hostname>",
            "<appversion>7.1.431.-1</appversion>",
            "<GfeVersion>3.23.0.74</GfeVersion>",
            "<HttpsPort>47984</HttpsPort>",
            "<MaxLumaPixelsHEVC>1869449984</MaxLumaPixelsHEVC>",
            "<mac>aa:bb:cc:dd:ee:ff</mac>",
            "<ServerCodecModeSupport>257</ServerCodecModeSupport>",
            "<DisplayMode><Width>1920</Width><Height>1080</Height><RefreshRate>60</RefreshRate></DisplayMode>",
            "<PairStatus>1</PairStatus>",
            "<currentgame>0</currentgame>",
            "<state>SUNSHINE_SERVER_FREE</state>",
        ] {
            assert!(x.contains(needle), "{needle} missing in {x}");
        }
        assert!(!x.contains("MJOLNIR"));
    }

    #[test]
    fn serverinfo_unpaired_and_busy() {
        let mut i = info();
        i.paired = false;
        i.current_game = Some(3);
        i.codecs = CodecSupport::default();
        let x = server_info(&i);
        assert!(x.contains("<mac>00:00:00:00:00:00</mac>"));
        assert!(x.contains("<PairStatus>0</PairStatus>"));
        assert!(x.contains("<currentgame>3</currentgame>"));
        assert!(x.contains("<state>SUNSHINE_SERVER_BUSY</state>"));
        assert!(x.contains("<MaxLumaPixelsHEVC>0</MaxLumaPixelsHEVC>"));
        assert!(x.contains("<ServerCodecModeSupport>1</ServerCodecModeSupport>"));
    }

    #[test]
    fn codec_bits() {
        let all = CodecSupport {
            h264: true,
            hevc: true,
            hevc_main10: true,
            av1: true,
            av1_main10: true,
        };
        assert_eq!(all.mode_bits(), 0x1 | 0x100 | 0x200 | 0x10000 | 0x20000);
        let c = CodecSupport {
            hevc: true,
            hevc_main10: true,
            ..Default::default()
        };
        assert_eq!(c.mode_bits(), 769);
    }

    #[test]
    fn replies() {
        assert!(app_list(&[
            AppEntry { id: 1, title: "Desktop".into(), hdr: false },
            AppEntry { id: 0, title: "Broken".into(), hdr: false },
        ])
        .contains("<App><IsHdrSupported>0</IsHdrSupported><AppTitle>Desktop</AppTitle><ID>1</ID></App></root>"));
        assert!(
            !app_list(&[AppEntry {
                id: 0,
                title: "Broken".into(),
                hdr: false
            }])
            .contains("Broken")
        );
        let u = session_url("192.168.1.10".parse().unwrap(), 48010);
        assert_eq!(u, "rtsp://192.168.1.10:48010");
        assert_eq!(
            session_url("::1".parse().unwrap(), 48010),
            "rtsp://[::1]:48010"
        );
        assert!(launch(&u).ends_with("<sessionUrl0>rtsp://192.168.1.10:48010</sessionUrl0><gamesession>1</gamesession></root>"));
        assert!(resume(&u).contains("<resume>1</resume>"));
        assert!(cancel().contains("<cancel>1</cancel>"));
        assert!(unpair().contains(r#"<root status_code="200">"#));
        assert!(unauthorized("/serverinfo").ends_with(
            r#"<root status_code="401" status_message="The client is not authorized. Certificate verification failed." query="/serverinfo"/>"#
        ));
        assert!(
            pair_reply(true, Some(("plaincert", "2D2D")))
                .contains("<paired>1</paired><plaincert>2D2D</plaincert>")
        );
        assert!(pair_failed("x").contains(r#"status_code="400""#));
        assert!(not_found().contains(r#"status_code="404""#));
        assert_eq!(escape("a\u{1}&\"'"), "a&amp;&quot;&apos;");
    }
}
