//! A simulated, fault-injecting in-memory filesystem for tests.
//!
//! The model is deliberately strict: a file's contents survive a simulated crash only up to its
//! last successful `sync_data`, and a directory entry (creation, rename, unlink) only if the
//! directory was synced after it. [`SimFs::crash`] returns the filesystem a restarted process
//! would see. (Killing a real process keeps the page cache and so proves nothing about fsync.)
//!
//! Faults: a space limit (writes past it are short and fail with `ENOSPC`), a one-shot short
//! write, failing fsyncs, a reported free-space override, and a *freeze* after N mutating
//! operations, which models the process dying at that exact point: every later mutation fails
//! and is not applied.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fs::{Filesystem, FsFile};

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;
/// EIO on Linux.
const EIO: i32 = 5;
/// EMFILE on Linux.
const EMFILE: i32 = 24;

/// Injected faults. All default to "none".
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Total bytes all files may hold; a write past it is short and fails with ENOSPC.
    pub space_limit: Option<u64>,
    /// The next append writes half of its data and then fails.
    pub short_write_once: bool,
    /// The next fsync fails with EIO (data stays unsynced).
    pub fail_fsync_once: bool,
    /// Every fsync fails with EIO.
    pub fail_fsync_always: bool,
    /// What `available_space` reports, overriding the space limit.
    pub available_override: Option<u64>,
    /// After this many mutating operations the filesystem freezes: later mutations fail with
    /// EIO and change nothing, as if the process had died there.
    pub freeze_after_ops: Option<u64>,
    /// The next this many opens for reading fail with EMFILE (out of file descriptors), or
    /// with `read_open_errno`.
    pub fail_read_opens: u32,
    /// The errno of the opens `fail_read_opens` fails, instead of EMFILE.
    pub read_open_errno: Option<i32>,
    /// A crash keeps each file's length but not its unsynced data, which reads as zeros (the
    /// size reached the disk, the pages did not: what some filesystems show after a crash).
    pub crash_keeps_length: bool,
}

#[derive(Debug, Default)]
struct Inode {
    /// Contents as the running process sees them (page cache).
    data: Vec<u8>,
    /// Contents as of the last successful sync: what survives a crash.
    synced: Vec<u8>,
}

type InodeRef = Arc<Mutex<Inode>>;

#[derive(Debug, Default)]
struct State {
    /// The namespace the running process sees.
    files: BTreeMap<PathBuf, InodeRef>,
    /// The namespace as of the last directory sync: what survives a crash.
    durable: BTreeMap<PathBuf, InodeRef>,
    faults: Faults,
    /// Mutating operations performed so far.
    ops: u64,
    /// Directories locked by [`Filesystem::lock_dir`]; a crash releases them all.
    locked: std::collections::BTreeSet<PathBuf>,
}

/// The simulated filesystem; clones share state.
#[derive(Debug, Default, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// While `true`, every fsync waits (lets tests pile appends up behind one fsync).
    gate: Arc<(Mutex<bool>, Condvar)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eio(what: &str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(EIO).kind(),
        format!("simulated EIO: {what}"),
    )
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl State {
    /// Counts a mutating operation; fails when the filesystem is frozen.
    fn op(&mut self) -> io::Result<()> {
        self.ops += 1;
        match self.faults.freeze_after_ops {
            Some(n) if self.ops > n => Err(eio("frozen (simulated crash point passed)")),
            _ => Ok(()),
        }
    }
    fn used(&self) -> u64 {
        self.files.values().map(|i| lock(i).data.len() as u64).sum()
    }
}

impl SimFs {
    /// An empty filesystem with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// Holds (`true`) or releases (`false`) every fsync.
    pub fn hold_fsyncs(&self, hold: bool) {
        let (m, cv) = &*self.gate;
        *lock(m) = hold;
        cv.notify_all();
    }

    fn wait_gate(&self) {
        let (m, cv) = &*self.gate;
        let mut held = lock(m);
        while *held {
            held = cv.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Mutating operations performed so far (to enumerate crash points).
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// The filesystem a restarted process sees after a crash now: unsynced data and
    /// unsynced directory changes are gone. Faults are cleared.
    pub fn crash(&self) -> SimFs {
        let st = lock(&self.state);
        let mut files = BTreeMap::new();
        for (path, inode) in &st.durable {
            let mut synced = lock(inode).synced.clone();
            let len = lock(inode).data.len();
            if st.faults.crash_keeps_length && len > synced.len() {
                synced.resize(len, 0);
            }
            files.insert(
                path.clone(),
                Arc::new(Mutex::new(Inode {
                    data: synced.clone(),
                    synced,
                })),
            );
        }
        let durable = files.clone();
        SimFs {
            state: Arc::new(Mutex::new(State {
                files,
                durable,
                faults: Faults::default(),
                ops: 0,
                locked: std::collections::BTreeSet::new(),
            })),
            gate: Arc::default(),
        }
    }

    /// Current (page-cache) contents of a file, for corruption tests.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.files.get(path).map(|i| lock(i).data.clone())
    }

    /// Overwrites a file's contents, durably (models bit rot or an external edit).
    pub fn write_durable(&self, path: &Path, data: Vec<u8>) {
        let mut st = lock(&self.state);
        let inode = Arc::new(Mutex::new(Inode {
            data: data.clone(),
            synced: data,
        }));
        st.files.insert(path.to_owned(), inode.clone());
        st.durable.insert(path.to_owned(), inode);
    }

    /// Paths of all current files.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }
}

/// A handle on a simulated inode (stays valid after unlink, as on POSIX).
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: InodeRef,
    writable: bool,
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let inode = lock(&self.inode);
        let len = inode.data.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(inode.data.len() - start);
        buf[..n].copy_from_slice(&inode.data[start..start + n]);
        Ok(n)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only handle",
            ));
        }
        let mut st = lock(&self.fs.state);
        st.op()?;
        let mut allowed = data.len();
        let mut err = None;
        if st.faults.short_write_once {
            st.faults.short_write_once = false;
            allowed = data.len() / 2;
            err = Some(eio("short write"));
        }
        if let Some(limit) = st.faults.space_limit {
            let room = limit.saturating_sub(st.used()) as usize;
            if room < allowed {
                allowed = room;
                err = Some(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        lock(&self.inode).data.extend_from_slice(&data[..allowed]);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.wait_gate();
        let mut st = lock(&self.fs.state);
        st.op()?;
        if st.faults.fail_fsync_always {
            return Err(eio("fsync"));
        }
        if st.faults.fail_fsync_once {
            st.faults.fail_fsync_once = false;
            return Err(eio("fsync"));
        }
        let mut inode = lock(&self.inode);
        inode.synced = inode.data.clone();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut st = lock(&self.fs.state);
        st.op()?;
        let len = usize::try_from(len).map_err(|_| eio("set_len too large"))?;
        lock(&self.inode).data.resize(len, 0);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.inode).data.len() as u64)
    }
}

impl Filesystem for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = lock(&self.state);
        st.op()?;
        if st.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        let inode: InodeRef = Arc::default();
        st.files.insert(path.to_owned(), inode.clone());
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            writable: true,
        }))
    }

    fn create_truncate(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = lock(&self.state);
        st.op()?;
        // A fresh inode: models O_TRUNC on a new file; the old one (if any) is replaced.
        let inode: InodeRef = Arc::default();
        st.files.insert(path.to_owned(), inode.clone());
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            writable: true,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = lock(&self.state);
        let inode = st.files.get(path).cloned().ok_or_else(|| not_found(path))?;
        if st.faults.fail_read_opens > 0 {
            st.faults.fail_read_opens -= 1;
            let errno = st.faults.read_open_errno.unwrap_or(EMFILE);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            writable: false,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let st = lock(&self.state);
        let inode = st.files.get(path).cloned().ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            writable: true,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        let inode = st.files.remove(from).ok_or_else(|| not_found(from))?;
        st.files.insert(to.to_owned(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        st.files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.op()?;
        let st = &mut *st;
        st.durable.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in &st.files {
            if p.parent() == Some(dir) {
                st.durable.insert(p.clone(), i.clone());
            }
        }
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<crate::fs::DirLock> {
        /// Unlocks its directory when dropped, as closing a locked file does.
        struct Held(Arc<Mutex<State>>, PathBuf);
        impl Drop for Held {
            fn drop(&mut self) {
                lock(&self.0).locked.remove(&self.1);
            }
        }
        if !lock(&self.state).locked.insert(dir.to_owned()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        Ok(crate::fs::DirLock::new(Held(
            self.state.clone(),
            dir.to_owned(),
        )))
    }

    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        let st = lock(&self.state);
        if let Some(v) = st.faults.available_override {
            return Ok(v);
        }
        Ok(match st.faults.space_limit {
            Some(limit) => limit.saturating_sub(st.used()),
            None => u64::MAX / 2,
        })
    }
}
