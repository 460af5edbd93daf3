//! `~/.config/punktfunk/media.toml`.

use punktfunk_common::config::{DaemonConfig, IpcConfig};
use serde::{Deserialize, Serialize};

use crate::admission::{DEFAULT_SOFTWARE_MPIXELS_PER_CPU, MAX_SOFTWARE_MPIXELS_PER_CPU};
use crate::description::{GAME_PATTERN, TEST_PATTERNS};

/// media.toml: the media daemon's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// The `[ipc]` table shared by every daemon.
    pub ipc: IpcConfig,
    /// Software encoders' pixel budget per CPU, in Mpixel/s (width × height × fps summed over
    /// software-encoded streams); 0 = no budget (only the stream count limits).
    pub software_mpixels_per_cpu: u32,
    /// The test source's pattern: `game` (default: busy, moving, high detail) or one of
    /// [`TEST_PATTERNS`] (`ball` is the old ball on black).
    pub test_pattern: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            ipc: IpcConfig::default(),
            software_mpixels_per_cpu: DEFAULT_SOFTWARE_MPIXELS_PER_CPU,
            test_pattern: GAME_PATTERN.to_string(),
        }
    }
}

impl DaemonConfig for MediaConfig {
    fn ipc(&self) -> &IpcConfig {
        &self.ipc
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.ipc.validate()?;
        if !TEST_PATTERNS.contains(&self.test_pattern.as_str()) {
            return Err((
                "test_pattern".into(),
                format!(
                    "`{}` is not a test pattern: use one of {}",
                    self.test_pattern,
                    TEST_PATTERNS.join(", ")
                ),
            ));
        }
        if self.software_mpixels_per_cpu > MAX_SOFTWARE_MPIXELS_PER_CPU {
            return Err((
                "software_mpixels_per_cpu".into(),
                format!(
                    "{} is out of range: use 1 to {MAX_SOFTWARE_MPIXELS_PER_CPU} Mpixel/s per CPU, \
                     or 0 for no budget",
                    self.software_mpixels_per_cpu
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_common::config::load_with_env;

    #[test]
    fn default_file_and_env_and_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = load_with_env::<MediaConfig>(dir.path(), "media", &[]).expect("defaults");
        assert_eq!(l.config.software_mpixels_per_cpu, 83);
        assert_eq!(l.config.test_pattern, "game");
        let env = [(
            "PUNKTFUNK_MEDIA_TEST_PATTERN".to_string(),
            "ball".to_string(),
        )];
        let l = load_with_env::<MediaConfig>(dir.path(), "media", &env).expect("ball by name");
        assert_eq!(l.config.test_pattern, "ball");
        let env = [(
            "PUNKTFUNK_MEDIA_TEST_PATTERN".to_string(),
            "fireworks".to_string(),
        )];
        load_with_env::<MediaConfig>(dir.path(), "media", &env).expect_err("unknown pattern");

        std::fs::write(
            dir.path().join("media.toml"),
            "software_mpixels_per_cpu = 200\n",
        )
        .expect("write");
        let l = load_with_env::<MediaConfig>(dir.path(), "media", &[]).expect("file");
        assert_eq!(l.config.software_mpixels_per_cpu, 200);

        let env = [(
            "PUNKTFUNK_MEDIA_SOFTWARE_MPIXELS_PER_CPU".to_string(),
            "0".to_string(),
        )];
        let l = load_with_env::<MediaConfig>(dir.path(), "media", &env).expect("env");
        assert_eq!(l.config.software_mpixels_per_cpu, 0);

        std::fs::write(
            dir.path().join("media.toml"),
            "software_mpixels_per_cpu = 2000000\n",
        )
        .expect("write");
        let e = load_with_env::<MediaConfig>(dir.path(), "media", &[]).expect_err("range");
        assert_eq!(e.key.as_deref(), Some("software_mpixels_per_cpu"));
        assert!(e.message.contains("out of range"), "{}", e.message);

        std::fs::write(dir.path().join("media.toml"), "software_budget = 1\n").expect("write");
        let e = load_with_env::<MediaConfig>(dir.path(), "media", &[]).expect_err("unknown key");
        assert!(e.to_string().contains("software_budget"), "{e}");
    }
}
