//! The apps a client can launch: `$XDG_CONFIG_HOME/punktfunk/apps.toml`, one list shared by
//! punktfunk/1 (`Hello.app`) and GameStream (`applist`/`launch`).
//!
//! ```toml
//! [[app]]
//! title = "Steam Big Picture"
//! command = ["steam", "-gamepadui"]
//! compositor = "gamescope"      # optional: the backend this app needs
//! image = "/usr/share/punktfunk/steam.png"   # optional: box art (PNG) for Moonlight
//! ```
//!
//! Two apps are built in and always listed first: [`DESKTOP`] (the output with no command) and
//! [`TEST_PATTERN`] (`punktfunk-testpattern`, a Wayland client drawing our frame counter). A
//! file entry with a built-in title replaces the built-in. Titles are unique (case-insensitive);
//! a file with a duplicate, an empty title or an empty command is an [`AppsError`] naming the
//! entry.

use std::path::{Path, PathBuf};

/// The built-in app that streams the output itself, with nothing launched in it.
pub const DESKTOP: &str = "Desktop";
/// The built-in app that runs `punktfunk-testpattern` in the output.
pub const TEST_PATTERN: &str = "Test pattern";
/// The test pattern's binary, looked up on `PATH` (installed beside the daemons).
pub const TEST_PATTERN_BINARY: &str = "punktfunk-testpattern";
/// The apps file's name inside the config directory.
pub const APPS_FILE: &str = "apps.toml";
/// At most this many apps are listed (Moonlight shows them as a grid; the file is local and
/// trusted, the bound keeps replies small).
pub const MAX_APPS: usize = 256;

/// One launchable app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The name clients show and ask for.
    pub title: String,
    /// argv of what runs inside the client's output; empty for [`DESKTOP`].
    #[serde(default)]
    pub command: Vec<String>,
    /// The compositor backend this app needs (`"gamescope"`, `"mutter"`, `"kwin"`, `"sway"`);
    /// `None`: the configured default.
    #[serde(default)]
    pub compositor: Option<String>,
    /// Box art (a PNG file) for clients that show one.
    #[serde(default)]
    pub image: Option<PathBuf>,
}

/// What is wrong with an apps file.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The apps file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown key.
    #[error("invalid apps file {path}: {message}")]
    Syntax {
        /// The apps file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An entry breaks a rule (empty title, duplicate title, empty command, too many apps).
    #[error("invalid apps file {path}: app #{index}: {message}")]
    Entry {
        /// The apps file.
        path: PathBuf,
        /// 1-based position of the entry in the file.
        index: usize,
        /// What to fix.
        message: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    app: Vec<App>,
}

/// The list of apps, built-ins first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apps {
    apps: Vec<App>,
}

impl Default for Apps {
    fn default() -> Self {
        Self {
            apps: builtins().to_vec(),
        }
    }
}

fn builtins() -> [App; 2] {
    [
        App {
            title: DESKTOP.into(),
            command: Vec::new(),
            compositor: None,
            image: None,
        },
        App {
            title: TEST_PATTERN.into(),
            command: vec![TEST_PATTERN_BINARY.into()],
            compositor: None,
            image: None,
        },
    ]
}

impl Apps {
    /// Loads `<config_dir>/apps.toml`; a missing file means the built-ins only.
    pub fn load(config_dir: &Path) -> Result<Self, AppsError> {
        let path = config_dir.join(APPS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(AppsError::Read { path, source }),
        }
    }

    /// Parses the text of an apps file (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, AppsError> {
        let file: File = toml::from_str(text).map_err(|e| AppsError::Syntax {
            path: path.into(),
            message: e.message().to_string(),
        })?;
        let entry = |index: usize, message: String| AppsError::Entry {
            path: path.into(),
            index: index + 1,
            message,
        };
        if file.app.len() > MAX_APPS {
            return Err(entry(
                MAX_APPS,
                format!("at most {MAX_APPS} apps are allowed"),
            ));
        }
        let mut apps = builtins().to_vec();
        let mut from_file: Vec<App> = Vec::with_capacity(file.app.len());
        for (i, app) in file.app.into_iter().enumerate() {
            if app.title.trim().is_empty() {
                return Err(entry(
                    i,
                    "the title is empty: give every app a title".into(),
                ));
            }
            if from_file.iter().any(|a| same_title(&a.title, &app.title)) {
                return Err(entry(
                    i,
                    format!(
                        "the title {:?} is used twice: titles must be unique",
                        app.title
                    ),
                ));
            }
            if app.command.iter().any(|a| a.is_empty())
                || (app.command.is_empty() && !same_title(&app.title, DESKTOP))
            {
                return Err(entry(
                    i,
                    format!(
                        "{:?} has an empty command: give its argv, e.g. command = [\"steam\", \"-gamepadui\"]",
                        app.title
                    ),
                ));
            }
            from_file.push(app);
        }
        for app in from_file {
            match apps.iter_mut().find(|a| same_title(&a.title, &app.title)) {
                Some(builtin) => *builtin = app,
                None => apps.push(app),
            }
        }
        Ok(Self { apps })
    }

    /// Every app, built-ins first, in file order after them.
    pub fn list(&self) -> &[App] {
        &self.apps
    }

    /// The app with this title (case-insensitive).
    pub fn find(&self, title: &str) -> Option<&App> {
        self.apps.iter().find(|a| same_title(&a.title, title))
    }

    /// The app at `index` in [`Apps::list`]: GameStream names apps by a number, this one.
    pub fn by_index(&self, index: usize) -> Option<&App> {
        self.apps.get(index)
    }
}

fn same_title(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Apps, AppsError> {
        Apps::parse(Path::new("apps.toml"), text)
    }

    #[test]
    fn missing_file_lists_the_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let apps = Apps::load(dir.path()).unwrap();
        let titles: Vec<_> = apps.list().iter().map(|a| a.title.as_str()).collect();
        assert_eq!(titles, [DESKTOP, TEST_PATTERN]);
        assert!(apps.find(DESKTOP).unwrap().command.is_empty());
        assert_eq!(
            apps.find("test PATTERN").unwrap().command,
            [TEST_PATTERN_BINARY]
        );
    }

    #[test]
    fn file_apps_follow_the_builtins_and_may_replace_one() {
        let apps = parse(
            r#"
            [[app]]
            title = "Steam"
            command = ["steam", "-gamepadui"]
            compositor = "gamescope"
            [[app]]
            title = "desktop"
            command = ["foot"]
            "#,
        )
        .unwrap();
        let titles: Vec<_> = apps.list().iter().map(|a| a.title.as_str()).collect();
        assert_eq!(titles, ["desktop", TEST_PATTERN, "Steam"]);
        assert_eq!(
            apps.find("steam").unwrap().compositor.as_deref(),
            Some("gamescope")
        );
        assert_eq!(apps.by_index(2).unwrap().title, "Steam");
        assert!(apps.by_index(3).is_none());
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_fix() {
        let dup = parse("[[app]]\ntitle='A'\ncommand=['a']\n[[app]]\ntitle='a'\ncommand=['b']\n");
        let msg = dup.unwrap_err().to_string();
        assert!(
            msg.contains("app #2") && msg.contains("used twice"),
            "{msg}"
        );

        let empty = parse("[[app]]\ntitle='A'\ncommand=[]\n")
            .unwrap_err()
            .to_string();
        assert!(
            empty.contains("app #1") && empty.contains("empty command"),
            "{empty}"
        );

        let untitled = parse("[[app]]\ntitle=' '\ncommand=['x']\n")
            .unwrap_err()
            .to_string();
        assert!(untitled.contains("title is empty"), "{untitled}");

        let unknown = parse("[[app]]\ntitle='A'\ncommand=['x']\ncolour=1\n").unwrap_err();
        assert!(matches!(unknown, AppsError::Syntax { .. }), "{unknown}");

        let mut many = String::new();
        for i in 0..=MAX_APPS {
            many.push_str(&format!("[[app]]\ntitle='a{i}'\ncommand=['x']\n"));
        }
        assert!(parse(&many).unwrap_err().to_string().contains("at most"));
    }
}
