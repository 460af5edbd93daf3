//! `~/.config/punktfunk/transport.toml`.

use punktfunk_common::config::{DaemonConfig, IpcConfig};
use punktfunk_control::host::{MAX_BITRATE_KBPS, MIN_BITRATE_KBPS};
use serde::{Deserialize, Serialize};

/// Whether unpaired clients may stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairingMode {
    /// The default: only paired clients stream.
    Required,
    /// Anyone on the network may stream. Only by explicit configuration, and logged loudly.
    Open,
}

/// Where a session's frames come from (`source` in transport.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The data-plane generator: verifiable bytes at the negotiated bitrate and frame rate, no
    /// encoder and no audio (measures the network path alone).
    Synthetic,
    /// punktfunk-media's test source (videotestsrc with a frame counter, a sine for audio)
    /// through the real encoder.
    Test,
    /// A compositor output through punktfunk-session and punktfunk-media.
    Compositor,
}

impl Source {
    /// What punktfunk-media captures for this source (`None`: media is not involved).
    pub fn media_source(self) -> Option<punktfunk_proto::media::SourceKind> {
        use punktfunk_proto::media::SourceKind as Media;
        match self {
            Source::Synthetic => None,
            Source::Test => Some(Media::Test),
            Source::Compositor => Some(Media::Pipewire),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    pub ipc: IpcConfig,
    /// UDP port of punktfunk/1 (QUIC control).
    pub port: u16,
    /// Address to listen on ("::" = every IPv4 and IPv6 address).
    pub bind: String,
    /// Name shown to clients; empty = the machine's hostname.
    pub host_name: String,
    pub pairing: PairingMode,
    pub source: Source,
    /// A client that sends nothing for this long is gone (its session ends).
    pub idle_timeout_ms: u64,
    /// Upper bound for any client's bitrate, kbit/s (the protocol's own bound is 2 Gbit/s).
    pub max_bitrate_kbps: u32,
    /// Advertise `_punktfunk._udp` over mDNS.
    pub mdns: bool,
    pub fec: FecSettings,
    pub gamestream: GameStreamSettings,
}

/// The GameStream (Moonlight) shell.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameStreamSettings {
    /// Serve Moonlight clients.
    pub enabled: bool,
    /// The HTTP port; every other GameStream port is an offset from it (HTTPS − 5, video + 9,
    /// control + 10, audio + 11, RTSP + 21; see `gamestream::Ports`).
    pub http_port: u16,
}

impl Default for GameStreamSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            http_port: crate::gamestream::DEFAULT_HTTP_PORT,
        }
    }
}

/// Data-plane protection offered to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FecSettings {
    pub shard_bytes: u32,
    pub max_data_shards: u32,
    /// Parity shards per block as a share of its data shards, per mille (200 = 20 %).
    pub parity_permille: u32,
    pub parity_floor: u32,
    pub max_frame_bytes: u32,
    pub frames_in_flight: u32,
}

impl FecSettings {
    /// As offered in `Welcome.fec`.
    pub fn to_proto(&self) -> punktfunk_proto::control::FecConfig {
        punktfunk_proto::control::FecConfig {
            shard_bytes: self.shard_bytes,
            max_data_shards: self.max_data_shards,
            parity_permille: self.parity_permille,
            parity_floor: self.parity_floor,
            max_frame_bytes: self.max_frame_bytes,
            frames_in_flight: self.frames_in_flight,
        }
    }
}

impl Default for FecSettings {
    /// The data plane's defaults (`punktfunk_wire::DataPlaneConfig::default`), except what a
    /// host offers above the library's floor: 20 % parity, access units up to 8 MiB (what
    /// media's video ring accepts: a 4K IDR at a high bitrate), 8 frames in flight.
    fn default() -> Self {
        let d = punktfunk_wire::DataPlaneConfig {
            parity_permille: 200,
            max_frame_bytes: 8 << 20,
            frames_in_flight: 8,
            ..punktfunk_wire::DataPlaneConfig::default()
        };
        Self {
            shard_bytes: d.shard_bytes,
            max_data_shards: d.max_data_shards,
            parity_permille: d.parity_permille,
            parity_floor: d.parity_floor,
            max_frame_bytes: d.max_frame_bytes,
            frames_in_flight: d.frames_in_flight,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            ipc: IpcConfig::default(),
            port: punktfunk_discovery::DEFAULT_PORT,
            bind: "::".into(),
            host_name: String::new(),
            pairing: PairingMode::Required,
            source: Source::Test,
            idle_timeout_ms: 5_000,
            max_bitrate_kbps: MAX_BITRATE_KBPS,
            mdns: true,
            fec: FecSettings::default(),
            gamestream: GameStreamSettings::default(),
        }
    }
}

impl DaemonConfig for TransportConfig {
    fn ipc(&self) -> &IpcConfig {
        &self.ipc
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.ipc.validate()?;
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.bind.parse::<std::net::IpAddr>().is_err() {
            return err(
                "bind",
                format!(
                    "`{}` is not an IP address (use \"::\" or \"0.0.0.0\")",
                    self.bind
                ),
            );
        }
        if !(1_000..=600_000).contains(&self.idle_timeout_ms) {
            return err(
                "idle_timeout_ms",
                format!(
                    "{} is out of range: use 1000 to 600000",
                    self.idle_timeout_ms
                ),
            );
        }
        if !(MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(&self.max_bitrate_kbps) {
            return err(
                "max_bitrate_kbps",
                format!(
                    "{} is out of range: use {MIN_BITRATE_KBPS} to {MAX_BITRATE_KBPS}",
                    self.max_bitrate_kbps
                ),
            );
        }
        if !self.fec.shard_bytes.is_multiple_of(2) || !(64..=1400).contains(&self.fec.shard_bytes) {
            return err(
                "fec.shard_bytes",
                format!("{} must be even and in 64..=1400", self.fec.shard_bytes),
            );
        }
        if self.fec.parity_permille > 1000 {
            return err(
                "fec.parity_permille",
                format!("{} is above 1000 (100 %)", self.fec.parity_permille),
            );
        }
        if !(6..=65_514).contains(&self.gamestream.http_port) {
            return err(
                "gamestream.http_port",
                format!(
                    "{} leaves no room for the ports at offsets -5..+21 from it: use 6 to 65514",
                    self.gamestream.http_port
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's offer, as README's configuration table documents it (a refactoring once
    /// swapped it for the data-plane library's lighter defaults: 10 %, 4 MiB, 4 frames).
    #[test]
    fn fec_defaults_are_the_hosts_documented_offer() {
        let f = FecSettings::default();
        assert_eq!(
            (
                f.shard_bytes,
                f.max_data_shards,
                f.parity_permille,
                f.parity_floor,
                f.max_frame_bytes,
                f.frames_in_flight
            ),
            (1200, 1024, 200, 2, 8 << 20, 8)
        );
        assert!(TransportConfig::default().validate().is_ok());
    }
}
