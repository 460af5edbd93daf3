//! Data-plane keys from the QUIC TLS exporter, and `FecConfig` ⇄ [`DataPlaneConfig`].
//!
//! Both shells derive the AES-128-GCM keys of the UDP data plane from the QUIC connection's
//! TLS exporter (RFC 8446 §7.5), one secret per direction:
//!
//! ```text
//! material = TLS-Exporter(label, context = exporter_context(session_id), KEY_MATERIAL_LEN)
//! SessionKey { key = material[0..16], salt = material[16..20] }
//! ```
//!
//! with label [`EXPORTER_LABEL_HOST_TO_CLIENT`] for what the host seals (video, audio) and
//! [`EXPORTER_LABEL_CLIENT_TO_HOST`] for what the client seals. With quinn:
//! `conn.export_keying_material(&mut buf, label, &exporter_context(session_id))`.
//! The session id (from `Welcome.session_id`) in the context gives every session its own keys
//! even if two sessions ever ran over one TLS connection, so sequence numbers restarting at 0
//! never reuse a nonce under the same key.

use punktfunk_proto::control::{FecConfig, Pacing};
use punktfunk_wire::{ConfigError, DataPlaneConfig, PacingMode, SessionKey};

/// TLS exporter label of the host → client data-plane key.
pub const EXPORTER_LABEL_HOST_TO_CLIENT: &[u8] = b"EXPORTER-punktfunk/1 data host-to-client";
/// TLS exporter label of the client → host data-plane key.
pub const EXPORTER_LABEL_CLIENT_TO_HOST: &[u8] = b"EXPORTER-punktfunk/1 data client-to-host";
/// Bytes exported per direction: 16-byte AES-128 key ‖ 4-byte nonce salt.
pub const KEY_MATERIAL_LEN: usize = 20;

/// A direction of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sealed by the host (video, audio), opened by the client.
    HostToClient,
    /// Sealed by the client, opened by the host.
    ClientToHost,
}

impl Direction {
    /// The TLS exporter label of this direction.
    pub fn exporter_label(self) -> &'static [u8] {
        match self {
            Direction::HostToClient => EXPORTER_LABEL_HOST_TO_CLIENT,
            Direction::ClientToHost => EXPORTER_LABEL_CLIENT_TO_HOST,
        }
    }
}

/// The TLS exporter context: the session id, big-endian.
pub fn exporter_context(session_id: u64) -> [u8; 8] {
    session_id.to_be_bytes()
}

/// Exported key material had the wrong length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("exported key material must be {KEY_MATERIAL_LEN} bytes (got {0})")]
pub struct KeyMaterialLength(pub usize);

/// Builds the [`SessionKey`] of one direction from [`KEY_MATERIAL_LEN`] exported bytes.
pub fn session_key_from_material(material: &[u8]) -> Result<SessionKey, KeyMaterialLength> {
    let m: &[u8; KEY_MATERIAL_LEN] = material
        .try_into()
        .map_err(|_| KeyMaterialLength(material.len()))?;
    let mut key = [0u8; 16];
    let mut salt = [0u8; 4];
    key.copy_from_slice(&m[..16]);
    salt.copy_from_slice(&m[16..]);
    Ok(SessionKey { key, salt })
}

/// Frame interval for a refresh rate in millihertz (`1e12 / refresh_mhz`, rounded), or
/// `None` for 0.
pub fn frame_interval_ns(refresh_mhz: u32) -> Option<u64> {
    if refresh_mhz == 0 {
        return None;
    }
    let r = u64::from(refresh_mhz);
    Some((1_000_000_000_000 + r / 2) / r)
}

/// Duration of one audio frame (one Opus packet) on the data plane.
pub const AUDIO_FRAME_NS: u64 = 5_000_000;
/// Largest audio frame: the AU envelope plus one Opus packet (RFC 6716 caps a packet at 1275
/// bytes per frame; 4 KiB leaves room for multistream packets).
pub const AUDIO_MAX_FRAME_BYTES: u32 = 4096;

/// The audio stream's data-plane parameters, derived on both ends from the negotiated video
/// ones: same shards and FEC, but 5 ms frames, small frames and a deeper window (an audio frame
/// arrives every 5 ms, so 32 frames in flight cover the same 160 ms of reordering as video).
pub fn audio_data_plane(video: &DataPlaneConfig) -> DataPlaneConfig {
    DataPlaneConfig {
        max_frame_bytes: AUDIO_MAX_FRAME_BYTES.min(video.max_frame_bytes),
        frames_in_flight: 32,
        frame_interval_ns: AUDIO_FRAME_NS,
        ..*video
    }
}

/// The negotiated `FecConfig` plus the frame interval as a validated [`DataPlaneConfig`].
///
/// Fields `FecConfig` does not carry (`loss_deadline_intervals`, `max_udp_payload`) take
/// [`DataPlaneConfig::default`]'s values on both ends.
pub fn fec_to_wire(
    fec: &FecConfig,
    frame_interval_ns: u64,
) -> Result<DataPlaneConfig, ConfigError> {
    let d = DataPlaneConfig::default();
    let cfg = DataPlaneConfig {
        shard_bytes: fec.shard_bytes,
        max_data_shards: fec.max_data_shards,
        parity_permille: fec.parity_permille,
        parity_floor: fec.parity_floor,
        max_frame_bytes: fec.max_frame_bytes,
        frames_in_flight: fec.frames_in_flight,
        frame_interval_ns,
        loss_deadline_intervals: d.loss_deadline_intervals,
        max_udp_payload: d.max_udp_payload,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The `FecConfig` a host offers for a [`DataPlaneConfig`].
pub fn wire_to_fec(cfg: &DataPlaneConfig) -> FecConfig {
    FecConfig {
        shard_bytes: cfg.shard_bytes,
        max_data_shards: cfg.max_data_shards,
        parity_permille: cfg.parity_permille,
        parity_floor: cfg.parity_floor,
        max_frame_bytes: cfg.max_frame_bytes,
        frames_in_flight: cfg.frames_in_flight,
    }
}

/// `Welcome.pacing` for the mode a host's video sender uses.
pub fn pacing_to_proto(mode: PacingMode) -> Pacing {
    match mode {
        PacingMode::KernelFq => Pacing::KernelFq,
        PacingMode::UserSpace | PacingMode::Off => Pacing::UserSpace,
    }
}

/// The mode `Welcome.pacing` names (`None`: the host did not say, or a value we do not know).
pub fn pacing_from_proto(value: i32) -> Option<PacingMode> {
    match Pacing::try_from(value) {
        Ok(Pacing::KernelFq) => Some(PacingMode::KernelFq),
        Ok(Pacing::UserSpace) => Some(PacingMode::UserSpace),
        Ok(Pacing::Unspecified) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_round_trip_and_unknown_values() {
        for m in [PacingMode::KernelFq, PacingMode::UserSpace] {
            assert_eq!(pacing_from_proto(pacing_to_proto(m) as i32), Some(m));
        }
        assert_eq!(pacing_from_proto(0), None);
        assert_eq!(pacing_from_proto(99), None);
    }

    #[test]
    fn fec_round_trip_and_validation() {
        let d = DataPlaneConfig::default();
        let fec = wire_to_fec(&d);
        assert_eq!(fec_to_wire(&fec, d.frame_interval_ns), Ok(d));
        let bad = FecConfig {
            shard_bytes: 1201,
            ..fec
        };
        assert_eq!(
            fec_to_wire(&bad, 16_666_667),
            Err(ConfigError::ShardBytes(1201))
        );
        assert!(fec_to_wire(&fec, 0).is_err());
        assert!(fec_to_wire(&FecConfig::default(), 16_666_667).is_err());
    }

    #[test]
    fn key_material_split_and_length() {
        let m: Vec<u8> = (0u8..20).collect();
        let k = session_key_from_material(&m).unwrap();
        assert_eq!(k.key, core::array::from_fn::<u8, 16, _>(|i| i as u8));
        assert_eq!(k.salt, [16, 17, 18, 19]);
        assert_eq!(
            session_key_from_material(&m[..19]).err(),
            Some(KeyMaterialLength(19))
        );
        assert_ne!(
            Direction::HostToClient.exporter_label(),
            Direction::ClientToHost.exporter_label()
        );
        assert!(EXPORTER_LABEL_HOST_TO_CLIENT.starts_with(b"EXPORTER-"));
    }

    #[test]
    fn frame_intervals() {
        assert_eq!(frame_interval_ns(60_000), Some(16_666_667));
        assert_eq!(frame_interval_ns(59_940), Some(16_683_350));
        assert_eq!(frame_interval_ns(500_000), Some(2_000_000));
        assert_eq!(frame_interval_ns(1), Some(1_000_000_000_000));
        assert_eq!(frame_interval_ns(0), None);
    }

    #[test]
    fn audio_plane_derives_from_video() {
        let video = DataPlaneConfig {
            max_frame_bytes: 8 << 20,
            ..DataPlaneConfig::default()
        };
        let a = audio_data_plane(&video);
        assert_eq!(a.frame_interval_ns, AUDIO_FRAME_NS);
        assert_eq!(a.max_frame_bytes, AUDIO_MAX_FRAME_BYTES);
        assert_eq!(a.frames_in_flight, 32);
        assert_eq!(
            (a.shard_bytes, a.parity_permille, a.parity_floor),
            (video.shard_bytes, video.parity_permille, video.parity_floor)
        );
        assert!(a.validate().is_ok());
    }
}
