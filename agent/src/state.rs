//! The state folder: the install id, the consent record, the status of the
//! last probe, the accepted manifest and the spool. Every file is written
//! atomically (write, fsync, rename, fsync the folder), so a crash or a
//! pulled plug leaves either the old file or the new one, never half of one.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use lineprobe_shared::InstallId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

const INSTALL_ID_FILE: &str = "install_id";
pub(crate) const CONSENT_FILE: &str = "consent.json";
pub(crate) const STATUS_FILE: &str = "status.json";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
const SPOOL_DIR: &str = "spool";

/// An exclusive lock on a lock file, held until dropped.
///
/// Two agent processes may share a state folder (the daemon, and a `probe`
/// run by a scheduler): a read–compare–write of a state file by one must
/// not interleave with the other's, or the later writer puts back what the
/// earlier one had replaced. The lock is the operating system's on an open
/// file (`flock`, `LockFileEx`), so it also keeps two threads of one
/// process apart, and a process that dies lets go of it.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// Waits for the lock on `path` (created when missing).
    pub(crate) fn acquire(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| io(path, "open the lock file", e))?;
        file.lock().map_err(|e| io(path, "lock", e))?;
        Ok(Self { _file: file })
    }
}

/// The agent's state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state folder at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        create_private_dir(&root).map_err(|source| Error::Io {
            what: format!("cannot create the state folder {}", root.display()),
            source,
        })?;
        sweep_stale_temp(&root);
        Ok(Self { root })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The spool folder (not created here).
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(SPOOL_DIR)
    }

    /// A file in the folder.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The installation's id: created once (a `UUIDv7`) and kept for good.
    pub fn install_id(&self) -> Result<InstallId, Error> {
        let path = self.root.join(INSTALL_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => InstallId::parse(text.trim()).map_err(|e| Error::State {
                path: path.display().to_string(),
                reason: format!("{e}; restore the file from a backup to keep the terminal ID"),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let fresh = uuid::Uuid::now_v7().hyphenated().to_string();
                // Placed only if there is none yet, and read back: of two
                // processes racing (the daemon's first report and `status`,
                // which shows the terminal ID), the one that lost takes the
                // winner's id instead of going on with its own.
                write_new(&path, fresh.as_bytes())?;
                let text = fs::read_to_string(&path).map_err(|source| io(&path, "read", source))?;
                InstallId::parse(text.trim()).map_err(|e| Error::State {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
            Err(source) => Err(io(&path, "read", source)),
        }
    }

    /// Reads the JSON state file `name`; `None` when it does not exist.
    /// Holds the lock named `name` (a file `name.lock` in the folder).
    pub(crate) fn lock(&self, name: &str) -> Result<FileLock, Error> {
        FileLock::acquire(&self.path(&format!("{name}.lock")))
    }

    pub(crate) fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        read_json(&self.path(name))
    }

    /// Writes the JSON state file `name` atomically.
    pub(crate) fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let path = &self.path(name);
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::State {
            path: path.display().to_string(),
            reason: format!("cannot encode: {e}"),
        })?;
        write_atomic(path, &bytes)
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.display().to_string(),
                reason: format!("is not valid: {e}; delete it to start over"),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io(path, "read", source)),
    }
}

pub(crate) fn io(path: &Path, verb: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: format!("cannot {verb} {}", path.display()),
        source,
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix: a temporary file in the same folder, flushed to disk, renamed
/// over the target, and the folder flushed so the rename itself survives.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = temp_path(path);
    let result = write_temp(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| io(path, "replace", source))?;
        sync_dir(dir);
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` unless a file is there already, as
/// [`write_atomic`] does; `false` when another writer got there first. For
/// what is made once and kept for good (the install id, the probe's key):
/// of two processes that both found none, each renaming its own over the
/// other's, one would go on with a value no longer on disk.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = temp_path(path);
    let result = write_temp(&tmp, bytes).and_then(|()| {
        // A hard link never replaces a file. Where links are not to be
        // had, the rename.
        let placed = match fs::hard_link(&tmp, path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            Err(_) => {
                fs::rename(&tmp, path).map_err(|source| io(path, "replace", source))?;
                true
            }
        };
        if placed {
            sync_dir(dir);
        }
        Ok(placed)
    });
    let _ = fs::remove_file(&tmp);
    result
}

/// A temporary name beside `path`, as [`sweep_stale_temp`] knows them.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()))
}

/// Creates `tmp` with `bytes`, flushed to disk.
fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    // Owner only on Unix, from the start: spooled reports hold the
    // account, the address, the location and perhaps the MAC, and the key
    // file a secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(tmp)
        .map_err(|source| io(tmp, "create", source))?;
    file.write_all(bytes)
        .map_err(|source| io(tmp, "write", source))?;
    file.sync_all().map_err(|source| io(tmp, "flush", source))
}

/// How old a [`write_atomic`] temporary file must be to be taken for one a
/// killed process left behind: far longer than any write takes, so that
/// another process's write in progress (the daemon's, while `status` runs)
/// is never touched.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_hours(1);

/// Deletes the temporary files of [`write_atomic`] in `dir` that a process
/// killed mid-write left behind (a phone's OS kills apps often), once they
/// are [`STALE_TEMP`] old. Best effort: what cannot be read or deleted is
/// left for the next time.
pub(crate) fn sweep_stale_temp(dir: &Path) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    for entry in listing.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Exactly what `write_atomic` names them: `.{name}.{uuid}.tmp`.
        let ours = name.starts_with('.') && Path::new(name).extension().is_some_and(|e| e == "tmp");
        if !ours {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMP);
        if stale && fs::remove_file(entry.path()).is_ok() {
            tracing::info!(
                file = name,
                "removed a temporary file left by an interrupted write"
            );
        }
    }
}

/// Creates `dir` and its missing parents, readable by the owner only on
/// Unix (the files in it are personal data). A folder that exists keeps its
/// mode: it may be one the administrator chose and set up.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Flushes a folder's entries (the rename) where the platform allows it;
/// the state is written again on the next change if this fails.
fn sync_dir(dir: &Path) {
    let _ = lineprobe_shared::sync_dir(dir);
}

/// Removes `path` if present.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io(path, "delete", source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
        let first = state.install_id().expect("create");
        let again = StateDir::open(dir.path())
            .expect("reopen")
            .install_id()
            .expect("read");
        assert_eq!(first, again);
        let uuid = uuid::Uuid::parse_str(first.as_str()).expect("uuid");
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[test]
    fn damaged_state_files_are_errors_that_say_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
        // A damaged terminal ID is never silently replaced: the line's
        // history is keyed by it.
        fs::write(dir.path().join(INSTALL_ID_FILE), "not an id!\n").expect("write");
        let err = state.install_id().expect_err("damaged id").to_string();
        assert!(
            err.contains(INSTALL_ID_FILE) && err.contains("backup"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(INSTALL_ID_FILE)).expect("read"),
            "not an id!\n",
            "left as it was"
        );

        fs::write(dir.path().join("consent.json"), b"{\"accepted\": tru").expect("write");
        let err = state
            .read_json::<serde_json::Value>("consent.json")
            .expect_err("damaged JSON")
            .to_string();
        assert!(
            err.contains("consent.json") && err.contains("delete it"),
            "{err}"
        );
        assert!(
            state
                .read_json::<serde_json::Value>("absent.json")
                .expect("absent")
                .is_none()
        );

        // A state folder that cannot be made says which.
        let file = dir.path().join("a-file");
        fs::write(&file, b"").expect("write");
        let err = StateDir::open(file.join("state")).expect_err("not a folder");
        assert!(err.to_string().contains("a-file"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn the_state_folder_and_its_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        let state = StateDir::open(&root).expect("open");
        assert_eq!(mode(&root), 0o700);
        state.install_id().expect("install id");
        assert_eq!(mode(&root.join(INSTALL_ID_FILE)), 0o600);
        state
            .write_json(STATUS_FILE, &serde_json::json!({}))
            .expect("write");
        assert_eq!(mode(&root.join(STATUS_FILE)), 0o600);

        let report = lineprobe_shared::Report::from_json(
            &fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json"))
                .expect("example"),
        )
        .expect("report");
        let id = report.report_id;
        let now = chrono::Utc::now();
        let spool = crate::spool::Spool::new(state.spool_dir(), 10);
        spool
            .put(&crate::spool::SpoolEntry {
                report,
                spooled_at: now,
                retries: 0,
                next_attempt_at: now,
            })
            .expect("put");
        assert_eq!(mode(&state.spool_dir()), 0o700);
        assert_eq!(mode(&state.spool_dir().join(format!("{id}.json"))), 0o600);
    }
}
