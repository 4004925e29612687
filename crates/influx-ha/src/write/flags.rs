//! A backend's flag files (`diverged`, `maintenance`), made durable before the state they
//! record is acted on: a flag lost in a power cut would let reads go to a backend that misses
//! data, or send writes to one under maintenance.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Writes `dir/name` with `text` through a temporary file, fsyncs it, renames it into place
/// and fsyncs the directory.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Removes `dir/name` (absent already is fine) and fsyncs the directory.
pub(crate) fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_written_whole_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "diverged", "first\n").expect("write");
        write(dir.path(), "diverged", "second\n").expect("overwrite");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("diverged")).expect("read"),
            "second\n"
        );
        assert!(!dir.path().join("diverged.tmp").exists());
        remove(dir.path(), "diverged").expect("remove");
        assert!(!dir.path().join("diverged").exists());
        remove(dir.path(), "diverged").expect("absent is fine");
    }
}
