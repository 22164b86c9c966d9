//! Noticing that the address sources' data files changed, so that a
//! running daemon judges new reports with the new data instead of the data
//! it started with.
//!
//! Files are compared by modification time, size and identity (on Unix the
//! inode and the inode's change time, which no tool sets back: a file
//! replaced by one of the same size and modification time, as `cp -p` or an
//! unpacked archive leaves it, is a change too). A change is acted on
//! once the files have stayed the same for a settling time, so a file still
//! being copied into place is not read half-written (replacing a file by
//! renaming a finished one over it is safest: the change is then whole at
//! once).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// How long changed files must stay unchanged before they are reloaded.
pub const SOURCE_SETTLE: Duration = Duration::from_secs(2);

/// What is known of one file, `None` when it cannot be read (missing,
/// mid-rename).
type Stamp = Option<FileStamp>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
    identity: Identity,
}

/// The file's identity beyond its times and size: on Unix its device and
/// inode (a file renamed over it is another inode) and its inode's change
/// time (rewritten in place, its modification time set back, the change
/// time still moves).
#[cfg(unix)]
type Identity = (u64, u64, i64, i64);
#[cfg(not(unix))]
type Identity = ();

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> Identity {}

/// Watches the data files of a chain of address sources.
#[derive(Debug, Clone)]
pub struct SourceWatch {
    files: Vec<PathBuf>,
    /// The files as they were when the sources in use were opened.
    loaded: Vec<Stamp>,
    /// Changed files: as last seen, and since when they have looked so.
    pending: Option<(Vec<Stamp>, Instant)>,
    /// Files whose reload failed: not tried again until they change.
    failed: Option<Vec<Stamp>>,
    /// Whether the last look found the files as loaded.
    as_loaded: bool,
    settle: Duration,
}

impl SourceWatch {
    /// Watches `files`, taking them as they are now as the loaded ones.
    pub fn new(files: Vec<PathBuf>, settle: Duration) -> Self {
        let loaded = stamps(&files);
        Self {
            files,
            loaded,
            pending: None,
            failed: None,
            as_loaded: true,
            settle,
        }
    }

    /// The files watched.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// True when the files differ from the loaded ones and have stayed as
    /// they are for the settling time (and a reload of them has not failed
    /// already): the sources should be opened again, then
    /// [`SourceWatch::reloaded`] or [`SourceWatch::reload_failed`] called.
    pub fn due(&mut self, now: Instant) -> bool {
        let current = stamps(&self.files);
        self.as_loaded = current == self.loaded;
        if self.as_loaded {
            self.pending = None;
            return false;
        }
        if self.failed.as_ref() == Some(&current) {
            return false;
        }
        match &self.pending {
            Some((seen, since)) if *seen == current => now.duration_since(*since) >= self.settle,
            _ => {
                self.pending = Some((current, now));
                false
            }
        }
    }

    /// Whether [`SourceWatch::due`] last found the files as the sources in
    /// use were opened from (true before its first look): false while a
    /// change settles, is due, or could not be opened. Reports judged since
    /// a look that found them so may have been judged with data the files
    /// no longer hold.
    pub fn as_loaded(&self) -> bool {
        self.as_loaded
    }

    /// The sources were opened again from the files as [`SourceWatch::due`]
    /// last saw them.
    pub fn reloaded(&mut self) {
        if let Some((seen, _)) = self.pending.take() {
            self.loaded = seen;
            self.as_loaded = true;
        }
        self.failed = None;
    }

    /// Opening the changed files failed: the sources in use stay, and the
    /// files are tried again once they change.
    pub fn reload_failed(&mut self) {
        self.failed = self.pending.take().map(|(seen, _)| seen);
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some(FileStamp {
                modified: m.modified().ok()?,
                len: m.len(),
                identity: identity(&m),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(path: &std::path::Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_change_is_due_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.csv");
        std::fs::write(&file, "a").unwrap();
        set_mtime(&file, 1_000);
        let settle = Duration::from_secs(2);
        let mut watch = SourceWatch::new(vec![file.clone()], settle);
        let t0 = Instant::now();
        assert!(watch.as_loaded());
        assert!(!watch.due(t0), "nothing changed");
        assert!(watch.as_loaded());

        std::fs::write(&file, "ab").unwrap();
        set_mtime(&file, 2_000);
        assert!(!watch.due(t0), "just changed");
        assert!(!watch.as_loaded(), "settling");
        assert!(!watch.due(t0 + Duration::from_secs(1)));
        // Still being written: the settling starts again.
        std::fs::write(&file, "abc").unwrap();
        set_mtime(&file, 2_001);
        assert!(!watch.due(t0 + Duration::from_secs(2)));
        assert!(!watch.due(t0 + Duration::from_secs(3)));
        assert!(watch.due(t0 + Duration::from_secs(4)));
        assert!(!watch.as_loaded(), "due");
        watch.reloaded();
        assert!(watch.as_loaded());
        assert!(!watch.due(t0 + Duration::from_secs(10)), "loaded now");
        assert!(watch.as_loaded());
    }

    #[test]
    fn a_failed_reload_waits_for_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("geo.mmdb");
        std::fs::write(&file, "v1").unwrap();
        set_mtime(&file, 1_000);
        let mut watch = SourceWatch::new(vec![file.clone()], Duration::ZERO);
        let now = Instant::now();
        std::fs::remove_file(&file).unwrap();
        assert!(!watch.due(now));
        assert!(watch.due(now), "a missing file is a change too");
        watch.reload_failed();
        assert!(!watch.due(now), "not tried again as it is");
        assert!(!watch.as_loaded(), "still the old data in use");
        std::fs::write(&file, "v2").unwrap();
        set_mtime(&file, 3_000);
        assert!(!watch.due(now));
        assert!(watch.due(now), "changed again");
        watch.reloaded();
        assert!(!watch.due(now));
        // Back to the same stamps as loaded: nothing to do.
        assert_eq!(watch.files(), [file]);
    }

    #[test]
    #[cfg(unix)]
    fn a_file_replaced_with_the_same_size_and_time_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.csv");
        std::fs::write(&file, "v1").unwrap();
        set_mtime(&file, 1_000);
        let mut watch = SourceWatch::new(vec![file.clone()], Duration::ZERO);
        let now = Instant::now();
        assert!(!watch.due(now));

        // Rewritten in place, its time set back (`cp -p`, `touch -r`).
        std::fs::write(&file, "v2").unwrap();
        set_mtime(&file, 1_000);
        assert!(!watch.due(now));
        assert!(watch.due(now), "rewritten in place");
        watch.reloaded();
        assert!(!watch.due(now));

        // Another file of the same size and time renamed over it.
        let new = dir.path().join("plan.csv.new");
        std::fs::write(&new, "v3").unwrap();
        set_mtime(&new, 1_000);
        std::fs::rename(&new, &file).unwrap();
        assert!(!watch.due(now));
        assert!(watch.due(now), "renamed over");
        watch.reloaded();
        assert!(!watch.due(now));
    }
}
