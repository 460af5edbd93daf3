//! The GameStream HTTP API's requests: `GET /<verb>?<query>` targets, the query parser, and the
//! typed parameters of `/launch` and `/resume`.
//!
//! The shell (HTTP on 47989, HTTPS on 47984) hands the request target to [`parse_target`] and
//! gets a [`Verb`] and a [`Query`]. Parameter names are matched case-insensitively (Sunshine
//! does); empty segments (`a=1&&b=2`, a trailing `&`) are skipped; a parameter without `=` has
//! an empty value; the first occurrence of a repeated name wins. Everything is bounded:
//! [`MAX_TARGET_LEN`] bytes and [`MAX_QUERY_PARAMS`] parameters.

use std::fmt;

/// Longest request target accepted (path + query). The largest legitimate one is pairing
/// phase 1: the hex of the client's PEM certificate (~2.6 KB for RSA-2048).
pub const MAX_TARGET_LEN: usize = 16 * 1024;
/// Most query parameters accepted (a launch sends ~20).
pub const MAX_QUERY_PARAMS: usize = 64;

/// Why a request target or one of its parameters was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The target is longer than [`MAX_TARGET_LEN`].
    #[error("request target of {0} bytes exceeds {MAX_TARGET_LEN}")]
    TooLong(usize),
    /// More than [`MAX_QUERY_PARAMS`] parameters.
    #[error("more than {MAX_QUERY_PARAMS} query parameters")]
    TooManyParams,
    /// The target does not start with `/`.
    #[error("request target must start with '/'")]
    NotAbsolute,
    /// A `%` escape that is not two hex digits, or an escape that decodes to invalid UTF-8.
    #[error("invalid percent escape in the query")]
    BadEscape,
    /// A required parameter is missing.
    #[error("missing query parameter '{0}'")]
    Missing(&'static str),
    /// A parameter's value does not parse.
    #[error("invalid value for query parameter '{name}': {reason}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The API verbs (the path of the request target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `/serverinfo` (HTTP and HTTPS).
    ServerInfo,
    /// `/pair` (phases 1-4 on HTTP, `pairchallenge` on HTTPS).
    Pair,
    /// `/unpair` (HTTP).
    Unpair,
    /// `/applist` (HTTPS).
    AppList,
    /// `/appasset` (HTTPS, box art PNG).
    AppAsset,
    /// `/launch` (HTTPS).
    Launch,
    /// `/resume` (HTTPS).
    Resume,
    /// `/cancel` (HTTPS).
    Cancel,
    /// Anything else (answer [`crate::xml::not_found`]).
    Unknown,
}

impl Verb {
    /// The verb of a path (`/serverinfo` → [`Verb::ServerInfo`]); case-sensitive like the
    /// clients send it.
    pub fn from_path(path: &str) -> Self {
        match path {
            "/serverinfo" => Self::ServerInfo,
            "/pair" => Self::Pair,
            "/unpair" => Self::Unpair,
            "/applist" => Self::AppList,
            "/appasset" => Self::AppAsset,
            "/launch" => Self::Launch,
            "/resume" => Self::Resume,
            "/cancel" => Self::Cancel,
            _ => Self::Unknown,
        }
    }

    /// Whether the verb is served on the plain-HTTP port (the others only over HTTPS).
    pub fn served_over_http(self) -> bool {
        matches!(self, Self::ServerInfo | Self::Pair | Self::Unpair)
    }
}

/// The decoded query of a request: names lower-cased, values percent-decoded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

// Queries carry secrets (rikey, pairing material): Debug shows the names only.
impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Splits a request target into its verb and query.
pub fn parse_target(target: &str) -> Result<(Verb, Query), QueryError> {
    if target.len() > MAX_TARGET_LEN {
        return Err(QueryError::TooLong(target.len()));
    }
    if !target.starts_with('/') {
        return Err(QueryError::NotAbsolute);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    Ok((Verb::from_path(path), Query::parse(query)?))
}

impl Query {
    /// Parses `a=1&b=2` (no leading `?`). See the module docs for the rules.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        if query.len() > MAX_TARGET_LEN {
            return Err(QueryError::TooLong(query.len()));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for segment in query.split('&') {
            if segment.is_empty() {
                continue;
            }
            if pairs.len() == MAX_QUERY_PARAMS {
                return Err(QueryError::TooManyParams);
            }
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            let name = percent_decode(name)?.to_ascii_lowercase();
            if pairs.iter().any(|(n, _)| *n == name) {
                continue;
            }
            pairs.push((name, percent_decode(value)?));
        }
        Ok(Self { pairs })
    }

    /// The value of `name` (case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or [`QueryError::Missing`].
    pub fn require(&self, name: &'static str) -> Result<&str, QueryError> {
        self.get(name).ok_or(QueryError::Missing(name))
    }

    /// The hex-decoded value of `name` (either case), exactly `len` bytes.
    pub fn hex_exact(&self, name: &'static str, len: usize) -> Result<Vec<u8>, QueryError> {
        let v = self.require(name)?;
        if v.len() != len * 2 {
            return Err(QueryError::Invalid {
                name,
                reason: "wrong length",
            });
        }
        hex_decode(v).ok_or(QueryError::Invalid {
            name,
            reason: "not hex",
        })
    }

    /// The hex-decoded value of `name`, at most `max` bytes.
    pub fn hex_bounded(&self, name: &'static str, max: usize) -> Result<Vec<u8>, QueryError> {
        let v = self.require(name)?;
        if v.len() > max * 2 {
            return Err(QueryError::Invalid {
                name,
                reason: "too long",
            });
        }
        hex_decode(v).ok_or(QueryError::Invalid {
            name,
            reason: "not hex",
        })
    }

    /// `name` as a decimal number of type `T`, or `None` if absent.
    pub fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, QueryError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| QueryError::Invalid {
                name,
                reason: "not a number",
            }),
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case); `None` for odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

/// Upper-case hex, as the clients and Sunshine send it.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xF)] as char);
    }
    s
}

fn percent_decode(s: &str) -> Result<String, QueryError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val);
            let lo = b.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(QueryError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::BadEscape)
}

/// Largest width or height accepted in a launch `mode` (8K is 7680).
pub const MAX_DIMENSION: u32 = 16384;
/// Largest frame rate accepted in a launch `mode`.
pub const MAX_FPS: u32 = 1000;

/// The display mode of a launch (`mode=WxHxFPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchMode {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second (0 only from GFE-style clients; RTSP ANNOUNCE repeats the real value).
    pub fps: u32,
}

impl LaunchMode {
    /// Parses `1920x1080x60`.
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        let bad = QueryError::Invalid {
            name: "mode",
            reason: "expected WIDTHxHEIGHTxFPS",
        };
        let mut it = s.split('x');
        let mut next = || -> Result<u32, QueryError> {
            it.next()
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or(bad.clone())
        };
        let (width, height, fps) = (next()?, next()?, next()?);
        if it.next().is_some() {
            return Err(bad);
        }
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(QueryError::Invalid {
                name: "mode",
                reason: "dimensions out of range",
            });
        }
        if fps > MAX_FPS {
            return Err(QueryError::Invalid {
                name: "mode",
                reason: "frame rate out of range",
            });
        }
        Ok(Self { width, height, fps })
    }
}

/// The session key material of a launch: `rikey` (the AES-128 key of every encrypted stream)
/// and `rikeyid` (the audio IV seed). Debug output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// AES-128 key.
    pub rikey: [u8; 16],
    /// The audio IV seed: the query's signed decimal reinterpreted as `u32`.
    pub rikeyid: u32,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

/// The parameters of `/launch` (or `/resume`, which has no `appid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The app from `/applist` (`None` for `/resume`).
    pub app_id: Option<u32>,
    /// The requested display mode (`None` if absent; `/resume` may omit it).
    pub mode: Option<LaunchMode>,
    /// Session keys.
    pub keys: SessionKeys,
    /// `(channelMask << 16) | channelCount` (stereo 0x30002), informational.
    pub surround_audio_info: Option<u32>,
    /// The client also wants audio played on the host.
    pub local_audio: bool,
    /// Bitmask of gamepads present at launch (`remoteControllersBitmap`, else `gcmap`).
    pub gamepads: u16,
    /// The client can encrypt RTSP (`corever >= 1`); this host never asks it to.
    pub corever: u32,
    /// The client offered HDR (`hdrMode=1`).
    pub hdr: bool,
}

impl LaunchRequest {
    /// Parses a `/launch` (`resume = false`, `appid` required) or `/resume` query.
    pub fn from_query(q: &Query, resume: bool) -> Result<Self, QueryError> {
        let app_id = if resume {
            q.number::<u32>("appid")?
        } else {
            let id = q
                .number::<u32>("appid")?
                .ok_or(QueryError::Missing("appid"))?;
            if id == 0 {
                return Err(QueryError::Invalid {
                    name: "appid",
                    reason: "app ids start at 1",
                });
            }
            Some(id)
        };
        let mode = q.get("mode").map(LaunchMode::parse).transpose()?;
        let rikey: [u8; 16] =
            q.hex_exact("rikey", 16)?
                .try_into()
                .map_err(|_| QueryError::Invalid {
                    name: "rikey",
                    reason: "wrong length",
                })?;
        let rikeyid = q
            .number::<i64>("rikeyid")?
            .ok_or(QueryError::Missing("rikeyid"))?;
        let rikeyid = i32::try_from(rikeyid)
            .map(|v| v as u32)
            .or_else(|_| u32::try_from(rikeyid))
            .map_err(|_| QueryError::Invalid {
                name: "rikeyid",
                reason: "not a 32-bit integer",
            })?;
        let gamepads = q
            .number::<u32>("remotecontrollersbitmap")?
            .or(q.number::<u32>("gcmap")?)
            .unwrap_or(0);
        Ok(Self {
            app_id,
            mode,
            keys: SessionKeys { rikey, rikeyid },
            surround_audio_info: q.number("surroundaudioinfo")?,
            local_audio: q.number::<u32>("localaudioplaymode")?.unwrap_or(0) != 0,
            gamepads: (gamepads & 0xFFFF) as u16,
            corever: q.number("corever")?.unwrap_or(0),
            hdr: q.number::<u32>("hdrmode")?.unwrap_or(0) != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_segments_and_case_insensitive_names() {
        let q = Query::parse("&&UniqueID=abc&&uuid=1&&flag&").unwrap();
        assert_eq!(q.get("uniqueid"), Some("abc"));
        assert_eq!(q.get("UUID"), Some("1"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn first_occurrence_wins_and_escapes_decode() {
        let q = Query::parse("a=1&a=2&n=roth%20x").unwrap();
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("n"), Some("roth x"));
        assert_eq!(Query::parse("a=%zz"), Err(QueryError::BadEscape));
        assert_eq!(Query::parse("a=%f"), Err(QueryError::BadEscape));
        assert_eq!(Query::parse("a=%ff"), Err(QueryError::BadEscape));
    }

    #[test]
    fn bounds() {
        let many = "a=1&".repeat(10)
            + &(0..MAX_QUERY_PARAMS)
                .map(|i| format!("p{i}=1&"))
                .collect::<String>();
        assert_eq!(Query::parse(&many), Err(QueryError::TooManyParams));
        let long = format!("/x?a={}", "0".repeat(MAX_TARGET_LEN));
        assert!(matches!(parse_target(&long), Err(QueryError::TooLong(_))));
        assert_eq!(parse_target("serverinfo"), Err(QueryError::NotAbsolute));
    }

    #[test]
    fn targets() {
        let (v, q) = parse_target("/serverinfo?uniqueid=0123456789ABCDEF&uuid=x").unwrap();
        assert_eq!(v, Verb::ServerInfo);
        assert_eq!(q.get("uniqueid"), Some("0123456789ABCDEF"));
        assert_eq!(parse_target("/nope").unwrap().0, Verb::Unknown);
        assert!(Verb::Pair.served_over_http());
        assert!(!Verb::Launch.served_over_http());
    }

    #[test]
    fn launch_from_the_captured_query() {
        // Appendix A.1 of the spec (moonlight-embedded 2.7.1).
        let (v, q) = parse_target("/launch?uniqueid=0123456789ABCDEF&uuid=4d45a371-525a-46e6-b8a2-645370e8f83b&appid=1&mode=1920x1080x60&additionalStates=1&sops=1&rikey=275d10721e8c0bd8877a0d6a8132610f&rikeyid=1157322752&localAudioPlayMode=0&surroundAudioInfo=196610&remoteControllersBitmap=0&gcmap=0&corever=1").unwrap();
        assert_eq!(v, Verb::Launch);
        let l = LaunchRequest::from_query(&q, false).unwrap();
        assert_eq!(l.app_id, Some(1));
        assert_eq!(
            l.mode,
            Some(LaunchMode {
                width: 1920,
                height: 1080,
                fps: 60
            })
        );
        assert_eq!(l.keys.rikey[0], 0x27);
        assert_eq!(l.keys.rikey[15], 0x0f);
        assert_eq!(l.keys.rikeyid, 1_157_322_752);
        assert_eq!(l.surround_audio_info, Some(0x30002));
        assert_eq!(l.corever, 1);
        assert!(!format!("{l:?}").contains("275d"));
        assert!(!format!("{q:?}").contains("275d"));
    }

    #[test]
    fn negative_rikeyid_and_bad_launches() {
        let q = Query::parse("appid=2&rikey=000102030405060708090A0B0C0D0E0F&rikeyid=-1").unwrap();
        let l = LaunchRequest::from_query(&q, false).unwrap();
        assert_eq!(l.keys.rikeyid, 0xFFFF_FFFF);
        assert_eq!(l.mode, None);
        let q = Query::parse("appid=0&rikey=000102030405060708090A0B0C0D0E0F&rikeyid=1").unwrap();
        assert!(LaunchRequest::from_query(&q, false).is_err());
        let q = Query::parse("rikey=000102030405060708090A0B0C0D0E0F&rikeyid=1").unwrap();
        assert_eq!(
            LaunchRequest::from_query(&q, false),
            Err(QueryError::Missing("appid"))
        );
        assert!(LaunchRequest::from_query(&q, true).is_ok());
        let q = Query::parse("appid=1&rikey=0001&rikeyid=1").unwrap();
        assert!(LaunchRequest::from_query(&q, false).is_err());
        for m in [
            "0x1080x60",
            "1920x1080",
            "1920x1080x60x1",
            "axbxc",
            "99999x10x60",
            "10x10x5000",
        ] {
            assert!(LaunchMode::parse(m).is_err(), "{m}");
        }
    }
}
