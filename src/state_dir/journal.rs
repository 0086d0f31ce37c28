//! One scheme for both sides' state files: `<side>.json`, the ownership journal (what
//! rs-agent made, recorded before a change and forgotten after a removal), and beside it
//! `<side>-desired.json`, the configuration last applied (for `status` without a config). Both
//! compact JSON, written atomically, 0644; a journal that owns nothing removes both.

use super::{load_json, write_atomic, StateError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The two files of one side's state.
#[derive(Debug, Clone, Copy)]
pub struct Journal {
    /// The ownership journal.
    pub file: &'static str,
    /// The configuration last applied.
    pub desired: &'static str,
}

/// The real server's state (`rs-agent up|down|run`).
pub const REAL_SERVER_JOURNAL: Journal = Journal {
    file: "real-server.json",
    desired: "real-server-desired.json",
};

/// The director's state (`rs-agent director up|down|run`).
pub const DIRECTOR_JOURNAL: Journal = Journal {
    file: "director.json",
    desired: "director-desired.json",
};

impl Journal {
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }

    /// The journal, or the default (owns nothing) when there is no file.
    pub fn load<T: DeserializeOwned + Default>(&self, dir: &Path) -> Result<T, StateError> {
        load_json(&self.path(dir))
    }

    /// Writes the journal; one that owns nothing removes it and the configuration beside it
    /// (nothing is left for `status` to compare).
    pub fn save<T: Serialize>(
        &self,
        dir: &Path,
        journal: &T,
        owns_nothing: bool,
    ) -> Result<(), StateError> {
        if owns_nothing {
            write_atomic(dir, self.file, None)?;
            return self.forget_desired(dir);
        }
        // Compact: with thousands of real servers the pretty form is megabytes.
        let text = serde_json::to_string(journal).unwrap_or_default();
        write_atomic(dir, self.file, Some(text))
    }

    /// The configuration last applied, if any.
    pub fn load_desired<D: DeserializeOwned>(&self, dir: &Path) -> Result<Option<D>, StateError> {
        load_json(&dir.join(self.desired))
    }

    pub fn save_desired<D: Serialize>(&self, dir: &Path, desired: &D) -> Result<(), StateError> {
        let text = serde_json::to_string(desired).unwrap_or_default();
        write_atomic(dir, self.desired, Some(text))
    }

    pub fn forget_desired(&self, dir: &Path) -> Result<(), StateError> {
        write_atomic(dir, self.desired, None)
    }
}
