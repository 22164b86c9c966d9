//! Making a rename survive a power cut.

use std::path::Path;

/// Flushes a folder's entries to disk, so that a file just renamed into it
/// is found there after a crash: `rename` alone changes the folder in
/// memory, and a crash can bring back the old entry (or none) while what
/// was written after it, relying on it, survives.
///
/// Windows cannot open a folder as a file; NTFS journals the rename itself,
/// so there this does nothing.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_syncs_and_a_missing_one_is_an_error() {
        let dir = std::env::temp_dir();
        sync_dir(&dir).unwrap();
        #[cfg(unix)]
        assert!(sync_dir(&dir.join("lineprobe-no-such-folder-9f3a")).is_err());
    }
}
