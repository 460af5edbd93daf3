//! Validation of the `_punktfunk._udp` TXT record.
//!
//! mdns-sd parses the packets; this module checks the *content*, which is
//! untrusted network input. Every value is bounded, the fingerprint must be
//! 64 hex digits, and a missing or malformed key yields a [`TxtError`] that
//! says which key and why, rather than a panic or a silently wrong host.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// TXT key: protocol name and version, e.g. `punktfunk/1`.
pub const KEY_PROTO: &str = "proto";
/// TXT key: SHA-256 fingerprint of the host certificate, 64 lowercase hex digits.
pub const KEY_FP: &str = "fp";
/// TXT key: `required` or `optional`.
pub const KEY_PAIR: &str = "pair";
/// TXT key: stable host id.
pub const KEY_ID: &str = "id";

/// Longest accepted `proto` value.
pub const MAX_PROTO_LEN: usize = 32;
/// Longest accepted `pair` value.
pub const MAX_PAIR_LEN: usize = 32;
/// Longest accepted `id` value.
pub const MAX_ID_LEN: usize = 64;
/// Length of a SHA-256 fingerprint in hex.
pub const FP_HEX_LEN: usize = 64;
/// Longest accepted value of any other (unknown) key, kept in [`ValidTxt::txt`].
pub const MAX_OTHER_VALUE_LEN: usize = 200;
/// Most TXT keys accepted in one record.
pub const MAX_KEYS: usize = 32;

/// Whether the host requires pairing before it serves a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// `pair=required`: an unpaired client is refused.
    Required,
    /// `pair=optional`.
    Optional,
    /// Any other (bounded, printable) value, kept verbatim for forward compatibility.
    Unknown(String),
}

impl Pairing {
    /// The TXT value for this pairing mode.
    pub fn as_txt(&self) -> &str {
        match self {
            Pairing::Required => "required",
            Pairing::Optional => "optional",
            Pairing::Unknown(s) => s,
        }
    }

    fn from_txt(v: &str) -> Pairing {
        match v {
            "required" => Pairing::Required,
            "optional" => Pairing::Optional,
            other => Pairing::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_txt())
    }
}

/// Why a TXT record was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TxtError {
    /// A required key is absent (or present without `=value`).
    #[error("TXT key `{key}` is missing")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A value is not valid UTF-8.
    #[error("TXT key `{key}` is not valid UTF-8")]
    NotUtf8 {
        /// The key (lossily decoded).
        key: String,
    },
    /// A value is longer than allowed.
    #[error("TXT key `{key}` is {len} bytes, limit {max}")]
    TooLong {
        /// The key (lossily decoded, truncated).
        key: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value contains characters outside the allowed set.
    #[error("TXT key `{key}` has a disallowed character")]
    BadChars {
        /// The key.
        key: String,
    },
    /// The fingerprint is not 64 hex digits.
    #[error("TXT key `fp` must be {FP_HEX_LEN} hex digits, got {len} characters{}", if *.non_hex { " (not all hex)" } else { "" })]
    BadFingerprint {
        /// Its length in characters.
        len: usize,
        /// Whether non-hex characters were present.
        non_hex: bool,
    },
    /// `proto` is not of the form `punktfunk/<version>`.
    #[error("TXT key `proto` is `{value}`, expected `punktfunk/<version>`")]
    BadProto {
        /// The value.
        value: String,
    },
    /// Too many keys in one record.
    #[error("TXT record has {count} keys, limit {MAX_KEYS}")]
    TooManyKeys {
        /// Number of keys.
        count: usize,
    },
}

/// A TXT record that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidTxt {
    /// `proto`, e.g. `punktfunk/1`.
    pub proto: String,
    /// `fp`, normalised to lowercase hex.
    pub fingerprint_hex: String,
    /// `pair`.
    pub pairing: Pairing,
    /// `id`.
    pub host_id: String,
    /// All keys (including the four above) with their values; a key without a
    /// value maps to the empty string.
    pub txt: BTreeMap<String, String>,
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn truncated(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Checks that `s` is exactly 64 hex digits; returns it lowercased.
pub fn normalize_fingerprint(s: &str) -> Result<String, TxtError> {
    let len = s.chars().count();
    let non_hex = !s.bytes().all(|b| b.is_ascii_hexdigit());
    if len != FP_HEX_LEN || non_hex {
        return Err(TxtError::BadFingerprint { len, non_hex });
    }
    Ok(s.to_ascii_lowercase())
}

/// Checks a host id: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn check_host_id(s: &str) -> Result<(), TxtError> {
    if s.len() > MAX_ID_LEN {
        return Err(TxtError::TooLong {
            key: KEY_ID.into(),
            len: s.len(),
            max: MAX_ID_LEN,
        });
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(TxtError::BadChars { key: KEY_ID.into() });
    }
    Ok(())
}

/// Validates the key/value pairs of a `_punktfunk._udp` TXT record.
///
/// `props` yields each key with its raw value (`None` for a bare key without
/// `=`). Keys are compared case-insensitively (RFC 6763 §6.4) and stored
/// lowercased; when a key repeats, the first occurrence wins (RFC 6763 §6.4).
pub fn validate_txt<'a, I>(props: I) -> Result<ValidTxt, TxtError>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut txt = BTreeMap::new();
    let mut count = 0usize;
    for (key, val) in props {
        count += 1;
        if count > MAX_KEYS {
            return Err(TxtError::TooManyKeys { count });
        }
        let key_lc = key.to_ascii_lowercase();
        if txt.contains_key(&key_lc) {
            continue;
        }
        let max = match key_lc.as_str() {
            KEY_PROTO => MAX_PROTO_LEN,
            KEY_FP => FP_HEX_LEN,
            KEY_PAIR => MAX_PAIR_LEN,
            KEY_ID => MAX_ID_LEN,
            _ => MAX_OTHER_VALUE_LEN,
        };
        let raw = val.unwrap_or(&[]);
        // Check the length before decoding so huge values are cheap to reject.
        // The fingerprint gets its own, more precise error below.
        if raw.len() > max && key_lc != KEY_FP {
            return Err(TxtError::TooLong {
                key: truncated(&key_lc),
                len: raw.len(),
                max,
            });
        }
        let s = std::str::from_utf8(raw).map_err(|_| TxtError::NotUtf8 {
            key: truncated(&key_lc),
        })?;
        // Known keys must be printable ASCII; unknown keys may carry any UTF-8
        // but no control characters (they end up in logs and terminals).
        let ok = match key_lc.as_str() {
            KEY_PROTO | KEY_FP | KEY_PAIR | KEY_ID => printable(s),
            _ => !s.chars().any(char::is_control),
        };
        if !ok {
            return Err(TxtError::BadChars {
                key: truncated(&key_lc),
            });
        }
        // A bare key (no `=`) counts as absent for the required keys.
        if val.is_none() && matches!(key_lc.as_str(), KEY_PROTO | KEY_FP | KEY_PAIR | KEY_ID) {
            continue;
        }
        txt.insert(key_lc, s.to_string());
    }

    let get = |key: &'static str| txt.get(key).ok_or(TxtError::Missing { key });
    let proto = get(KEY_PROTO)?.clone();
    match proto.strip_prefix("punktfunk/") {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(TxtError::BadProto { value: proto }),
    }
    let fingerprint_hex = normalize_fingerprint(get(KEY_FP)?)?;
    let pair = get(KEY_PAIR)?;
    if pair.is_empty() {
        return Err(TxtError::BadChars {
            key: KEY_PAIR.into(),
        });
    }
    let pairing = Pairing::from_txt(pair);
    let host_id = get(KEY_ID)?.clone();
    check_host_id(&host_id)?;
    txt.insert(KEY_FP.into(), fingerprint_hex.clone());
    Ok(ValidTxt {
        proto,
        fingerprint_hex,
        pairing,
        host_id,
        txt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn v(pairs: &[(&str, &str)]) -> Result<ValidTxt, TxtError> {
        validate_txt(pairs.iter().map(|(k, v)| (*k, Some(v.as_bytes()))))
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("proto", "punktfunk/1"),
            ("fp", FP),
            ("pair", "required"),
            ("id", "host-1"),
        ]
    }

    fn with(key: &'static str, val: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut g = good();
        for p in &mut g {
            if p.0 == key {
                p.1 = val;
            }
        }
        g
    }

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        good().into_iter().filter(|p| p.0 != key).collect()
    }

    #[test]
    fn accepts_good_record() {
        let t = v(&good()).expect("valid");
        assert_eq!(t.proto, "punktfunk/1");
        assert_eq!(t.fingerprint_hex, FP);
        assert_eq!(t.pairing, Pairing::Required);
        assert_eq!(t.host_id, "host-1");
        assert_eq!(t.txt.len(), 4);
        let t = v(&with("pair", "optional")).expect("valid");
        assert_eq!(t.pairing, Pairing::Optional);
    }

    #[test]
    fn uppercase_fingerprint_is_normalised() {
        let up = FP.to_ascii_uppercase();
        let props = [
            ("proto", "punktfunk/1"),
            ("fp", up.as_str()),
            ("pair", "required"),
            ("id", "h"),
        ];
        let t = v(&props).expect("valid");
        assert_eq!(t.fingerprint_hex, FP);
        assert_eq!(t.txt["fp"], FP);
    }

    #[test]
    fn bad_fingerprint_length() {
        assert_eq!(
            v(&with("fp", "abcd")),
            Err(TxtError::BadFingerprint {
                len: 4,
                non_hex: false
            })
        );
        let long = format!("{FP}00");
        let props = [
            ("proto", "punktfunk/1"),
            ("fp", long.as_str()),
            ("pair", "required"),
            ("id", "h"),
        ];
        assert!(matches!(
            v(&props),
            Err(TxtError::BadFingerprint { len: 66, .. })
        ));
        assert!(matches!(
            v(&with("fp", "")),
            Err(TxtError::BadFingerprint { len: 0, .. })
        ));
    }

    #[test]
    fn bad_fingerprint_non_hex() {
        let bad = "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(
            v(&with("fp", bad)),
            Err(TxtError::BadFingerprint {
                len: 64,
                non_hex: true
            })
        );
        // 64 bytes but multi-byte characters: never hex.
        let uni = "é".repeat(32);
        let props = [
            ("proto", "punktfunk/1"),
            ("fp", uni.as_str()),
            ("pair", "required"),
            ("id", "h"),
        ];
        assert!(v(&props).is_err());
    }

    #[test]
    fn missing_keys() {
        for key in [KEY_PROTO, KEY_FP, KEY_PAIR, KEY_ID] {
            assert_eq!(v(&without(key)), Err(TxtError::Missing { key }), "{key}");
        }
        assert_eq!(v(&[]), Err(TxtError::Missing { key: KEY_PROTO }));
        // A bare key without `=value` counts as missing.
        let props: Vec<(&str, Option<&[u8]>)> = vec![
            ("proto", Some(b"punktfunk/1")),
            ("fp", Some(FP.as_bytes())),
            ("pair", None),
            ("id", Some(b"h")),
        ];
        assert_eq!(
            validate_txt(props),
            Err(TxtError::Missing { key: KEY_PAIR })
        );
    }

    #[test]
    fn unknown_pair_value_is_kept() {
        let t = v(&with("pair", "sometimes")).expect("valid");
        assert_eq!(t.pairing, Pairing::Unknown("sometimes".into()));
        assert!(matches!(
            v(&with("pair", "")),
            Err(TxtError::BadChars { .. })
        ));
        assert!(matches!(
            v(&with("pair", "x\u{1b}[2J")),
            Err(TxtError::BadChars { .. })
        ));
    }

    #[test]
    fn oversize_values() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        let mut p = without("id");
        p.push(("id", Box::leak(long.into_boxed_str())));
        assert!(matches!(
            v(&p),
            Err(TxtError::TooLong {
                len: 65,
                max: 64,
                ..
            })
        ));
        let long = format!("punktfunk/{}", "1".repeat(40));
        let mut p = without("proto");
        p.push(("proto", Box::leak(long.into_boxed_str())));
        assert!(matches!(v(&p), Err(TxtError::TooLong { .. })));
        let mut p = good();
        p.push(("extra", Box::leak("x".repeat(250).into_boxed_str())));
        assert!(matches!(v(&p), Err(TxtError::TooLong { .. })));
        let many: Vec<(String, String)> = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
        let mut p: Vec<(&str, Option<&[u8]>)> = good()
            .into_iter()
            .map(|(k, v)| (k, Some(v.as_bytes())))
            .collect();
        p.extend(many.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))));
        assert!(matches!(validate_txt(p), Err(TxtError::TooManyKeys { .. })));
    }

    #[test]
    fn bad_proto_and_id() {
        assert!(matches!(
            v(&with("proto", "http/1")),
            Err(TxtError::BadProto { .. })
        ));
        assert!(matches!(
            v(&with("proto", "punktfunk/")),
            Err(TxtError::BadProto { .. })
        ));
        assert!(v(&with("proto", "punktfunk/2")).is_ok());
        assert!(matches!(
            v(&with("id", "a b")),
            Err(TxtError::BadChars { .. })
        ));
        assert!(matches!(v(&with("id", "")), Err(TxtError::BadChars { .. })));
    }

    #[test]
    fn non_utf8_and_duplicates() {
        let props: Vec<(&str, Option<&[u8]>)> = vec![
            ("proto", Some(b"punktfunk/1")),
            ("fp", Some(FP.as_bytes())),
            ("pair", Some(b"required")),
            ("id", Some(b"first")),
            ("ID", Some(b"second")),
            ("note", Some(&[0xff, 0xfe])),
        ];
        assert!(matches!(
            validate_txt(props.clone()),
            Err(TxtError::NotUtf8 { .. })
        ));
        let t = validate_txt(props.into_iter().take(5)).expect("valid");
        assert_eq!(t.host_id, "first");
    }
}
