//! Where weightvault writes what must not be left behind: plaintext files with no name until
//! they are complete, and scratch directories that a later command can tell are abandoned.
//!
//! - [`PlaintextFile`] is created with `O_TMPFILE`: an inode with no directory entry, which
//!   the kernel frees when the last descriptor closes, so no interruption (SIGKILL and a power
//!   cut included) leaves its bytes under any name. It gets its name with `linkat` only once
//!   it is complete, authenticated and synced. On a filesystem without `O_TMPFILE` it falls
//!   back to a named file in a private scratch directory, removed on every exit that runs code
//!   and by `weightvault gc` after one that does not (SIGKILL, power cut): a weaker guarantee,
//!   said in `docs/THREATS.md`.
//! - [`Scratch`] is a private directory beside a target, `.<name>.weightvault-<kind>[-<rand>]`,
//!   with a lock file `<dir>.lock` held (`flock`) for as long as its command runs. The lock
//!   dies with the process, so [`sweep`] removes exactly the scratch directories whose owner
//!   is gone, never one in use.
//!
//! Never: a plaintext byte written under a name before the whole file is authenticated.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Marks every scratch name weightvault makes (`.<name>.weightvault-<kind>...`).
const MARK: &str = ".weightvault-";

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

/// A file being written that has no name until [`PlaintextFile::link_to`].
#[derive(Debug)]
pub struct PlaintextFile {
    file: File,
    /// The fallback's temporary name (no `O_TMPFILE` on this filesystem); removed on drop.
    named: Option<PathBuf>,
}

impl PlaintextFile {
    /// Creates an unnamed file on the filesystem of `dir` (mode 0600), or, where that
    /// filesystem has no `O_TMPFILE`, a named one inside `dir` (which should be a [`Scratch`]).
    pub fn create_in(dir: &Path) -> std::io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(PlaintextFile {
                file: File::from(fd),
                named: None,
            }),
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL =>
            {
                Self::create_named_in(dir)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The fallback: a named private file in `dir`, removed unless linked.
    pub fn create_named_in(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!("{MARK}plain-{}", random_hex(8)));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(PlaintextFile {
            file,
            named: Some(path),
        })
    }

    /// Whether this file has no name (the strong guarantee).
    pub fn is_unnamed(&self) -> bool {
        self.named.is_none()
    }

    /// The open file, for writing.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Syncs the file and gives it the name `dest` (which must not exist), on the same
    /// filesystem. The caller syncs `dest`'s directory.
    pub fn link_to(mut self, dest: &Path) -> std::io::Result<()> {
        self.file.sync_all()?;
        match self.named.take() {
            Some(tmp) => {
                if dest.exists() {
                    self.named = Some(tmp);
                    return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
                }
                if let Err(e) = std::fs::rename(&tmp, dest) {
                    self.named = Some(tmp);
                    return Err(e);
                }
                Ok(())
            }
            None => {
                use rustix::fs::{AtFlags, CWD};
                let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                match rustix::fs::linkat(CWD, &proc, CWD, dest, AtFlags::SYMLINK_FOLLOW) {
                    Ok(()) => Ok(()),
                    // No /proc: AT_EMPTY_PATH does the same where the process may use it.
                    Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
                        rustix::fs::linkat(&self.file, "", CWD, dest, AtFlags::EMPTY_PATH)
                            .map_err(Into::into)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

impl Drop for PlaintextFile {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A private scratch directory beside a target, owned by this process while it is held.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    lock_path: PathBuf,
    /// Held with `flock` while this lives; the kernel drops it when the process dies.
    _lock: File,
    keep: bool,
}

/// Why a scratch directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// Another live process holds it.
    #[error("another weightvault command is writing {0} (its scratch directory is locked)")]
    Busy(PathBuf),
    /// The target has no file name.
    #[error("{0}: not a usable output path")]
    BadTarget(PathBuf),
    /// I/O.
    #[error(transparent)]
    Io(crate::durable::PathIoError),
}

impl ScratchError {
    /// `map_err` for an OS error while doing `action` on `path`.
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ScratchError {
        let path = path.to_path_buf();
        move |source| {
            ScratchError::Io(crate::durable::PathIoError {
                action,
                path,
                source,
            })
        }
    }
}

fn lock_path_of(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Opens and locks `path` without waiting: `Ok(None)` when another process holds it. The
/// lock is retaken when the file was replaced between open and lock (so a lock taken here is
/// always on the file that has that name).
fn try_lock(path: &Path, create: bool) -> std::io::Result<Option<File>> {
    use rustix::fs::FlockOperation;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    loop {
        let f = File::options()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let (mine, named) = (f.metadata()?, std::fs::metadata(path));
        match named {
            Ok(n) if n.ino() == mine.ino() && n.dev() == mine.dev() => return Ok(Some(f)),
            // Removed or replaced by a sweep meanwhile: take the file that has the name now.
            _ if create => continue,
            _ => return Ok(None),
        }
    }
}

impl Scratch {
    /// Takes `.<name>.weightvault-<kind>` beside `target` (a new one with a random suffix
    /// unless `stable`, which names the same directory each time, for resume state). The lock
    /// is taken before the directory is made, so no scratch directory ever exists unlocked
    /// while its owner lives.
    pub fn beside(target: &Path, kind: &str, stable: bool) -> Result<Self, ScratchError> {
        let name = target
            .file_name()
            .ok_or_else(|| ScratchError::BadTarget(target.into()))?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(target);
        create_private_dir(parent).map_err(ScratchError::io("creating", parent))?;
        let base = if stable {
            format!(".{name}{MARK}{kind}")
        } else {
            format!(".{name}{MARK}{kind}-{}", random_hex(6))
        };
        let dir = parent.join(base);
        let lock_path = lock_path_of(&dir);
        let lock = try_lock(&lock_path, true)
            .map_err(ScratchError::io("locking", &lock_path))?
            .ok_or_else(|| ScratchError::Busy(target.into()))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if stable && e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ScratchError::io("creating", &dir)(e)),
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ScratchError::io("protecting", &dir))?;
        Ok(Scratch {
            dir,
            lock_path,
            _lock: lock,
            keep: false,
        })
    }

    /// [`Scratch::beside`] for a command's output: the same target's abandoned scratch is swept
    /// first (its own, if `stable`, is skipped: it holds the lock by then), and the place is
    /// remembered for `weightvault gc`.
    pub fn for_output(target: &Path, kind: &str, stable: bool) -> Result<Self, ScratchError> {
        let s = Self::beside(target, kind, stable)?;
        let parent = parent_of(target);
        if let Some(name) = target.file_name() {
            let _ = sweep(parent, &format!(".{}{MARK}", name.to_string_lossy()), false);
        }
        remember_place(parent);
        Ok(s)
    }

    /// Names every complete file (`rel` path, file) inside this directory, then renames them
    /// as one tree to `out` (absent or an empty directory, which rename(2) replaces), syncs
    /// `out`'s parent and removes this directory with whatever else it holds.
    pub fn publish_files<R: AsRef<Path>>(
        self,
        files: impl IntoIterator<Item = (R, PlaintextFile)>,
        out: &Path,
    ) -> Result<(), ScratchError> {
        let root = self.dir.join("out");
        let _ = std::fs::remove_dir_all(&root);
        create_private_dir(&root).map_err(ScratchError::io("creating", &root))?;
        for (rel, plain) in files {
            let at = root.join(rel);
            if let Some(p) = at.parent() {
                create_private_dir(p).map_err(ScratchError::io("creating", p))?;
            }
            plain
                .link_to(&at)
                .map_err(ScratchError::io("naming", &at))?;
        }
        sync_dir(&root).map_err(ScratchError::io("syncing", &root))?;
        self.publish(&root, out)
            .map_err(ScratchError::io("renaming into place", out))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Leaves the directory in place when dropped (resume state that is ciphertext), and
    /// releases the lock; [`sweep`] removes it later if nothing resumes it.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Renames `from` (inside this directory) to `to`, syncs `to`'s parent, then removes
    /// this directory with whatever else it holds.
    pub fn publish(self, from: &Path, to: &Path) -> std::io::Result<()> {
        debug_assert!(from.starts_with(&self.dir));
        std::fs::rename(from, to)?;
        sync_dir(parent_of(to))?;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// `p`'s parent, `.` for a bare name.
pub fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `p` and its missing parents, each new one mode 0700.
pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
}

pub use crate::durable::sync_dir;

/// What kind of thing a leftover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// An `open` or `fetch` output that never completed (may hold plaintext).
    PartialOutput,
    /// A `fetch`'s resume state (the host-sealed stream: ciphertext).
    ResumeState,
    /// A `seal` that never completed (ciphertext).
    SealStaging,
    /// A revision being removed.
    RemovedRevision,
    /// A lock file whose directory is gone.
    Lock,
}

/// One abandoned scratch directory or file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Leftover {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub kind: LeftoverKind,
    /// Bytes in it.
    pub bytes: u64,
    /// Whether it was removed (false in a dry run).
    pub removed: bool,
}

/// What a name in a scanned directory is, if weightvault made it as scratch.
fn classify(name: &str) -> Option<LeftoverKind> {
    if !name.starts_with('.') {
        return None;
    }
    if name.ends_with(".lock") && name.contains(MARK) {
        return Some(LeftoverKind::Lock);
    }
    if name.contains(&format!("{MARK}partial-")) || name.contains(&format!("{MARK}tensor")) {
        return Some(LeftoverKind::PartialOutput);
    }
    // Earlier versions: `.weightvault-tensor-*` single files, `.NAME.weightvault-partial`
    // resume directories holding plaintext, `.staging-*` in a model's directory.
    if name.starts_with(".weightvault-tensor-") {
        return Some(LeftoverKind::PartialOutput);
    }
    if name.ends_with(&format!("{MARK}partial")) {
        return Some(LeftoverKind::ResumeState);
    }
    if name.contains(&format!("{MARK}staging")) || name.starts_with(".staging-") {
        return Some(LeftoverKind::SealStaging);
    }
    if name.contains(&format!("{MARK}removed")) {
        return Some(LeftoverKind::RemovedRevision);
    }
    None
}

fn size_of(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Finds the abandoned scratch in `dir` (not below it) whose names start with `prefix`
/// (empty for all), and removes each unless `dry_run`. A scratch directory whose lock is
/// held belongs to a running command and is left alone; one without a lock file was left by
/// an earlier version or a crash.
pub fn sweep(dir: &Path, prefix: &str, dry_run: bool) -> std::io::Result<Vec<Leftover>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut names: Vec<(String, LeftoverKind)> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let k = classify(&n)?;
            n.starts_with(prefix).then_some((n, k))
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    // Directories first, each under its own lock; then locks left without a directory.
    for (name, kind) in names.iter().filter(|(_, k)| *k != LeftoverKind::Lock) {
        let path = dir.join(name);
        let lock_path = lock_path_of(&path);
        let _held = if lock_path.exists() {
            match try_lock(&lock_path, false)? {
                Some(f) => Some(f),
                None if !lock_path.exists() => None,
                None => continue, // in use
            }
        } else {
            None
        };
        let bytes = size_of(&path);
        if !dry_run {
            let r = if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let _ = std::fs::remove_file(&lock_path);
        }
        out.push(Leftover {
            path,
            kind: *kind,
            bytes,
            removed: !dry_run,
        });
    }
    for (name, _) in names.iter().filter(|(_, k)| *k == LeftoverKind::Lock) {
        let path = dir.join(name);
        let owner = PathBuf::from(path.to_string_lossy().trim_end_matches(".lock").to_string());
        if owner.exists() || !path.exists() {
            continue;
        }
        // A lock just made by a command about to create its directory is held: skipped.
        let Some(_held) = try_lock(&path, false)? else {
            continue;
        };
        if !dry_run {
            let _ = std::fs::remove_file(&path);
        }
        out.push(Leftover {
            path,
            kind: LeftoverKind::Lock,
            bytes: 0,
            removed: !dry_run,
        });
    }
    Ok(out)
}

/// The per-user state directory: `$WEIGHTVAULT_STATE_DIR`, else `$XDG_STATE_HOME/weightvault`,
/// else `~/.local/state/weightvault`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WEIGHTVAULT_STATE_DIR").filter(|d| !d.is_empty()) {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("weightvault"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/weightvault"))
}

const PLACES: &str = "places";

/// Remembers that scratch was made in `dir`, so `weightvault gc` looks there. Best effort:
/// without a state directory, `gc DIR` still finds it.
pub fn remember_place(dir: &Path) {
    let Some(state) = state_dir() else { return };
    let Ok(abs) = std::fs::canonicalize(dir) else {
        return;
    };
    let file = state.join(PLACES);
    let known = std::fs::read_to_string(&file).unwrap_or_default();
    let line = abs.to_string_lossy();
    if known.lines().any(|l| l == line) {
        return;
    }
    if create_private_dir(&state).is_err() {
        return;
    }
    use std::io::Write;
    if let Ok(mut f) = File::options().create(true).append(true).open(&file) {
        let _ = writeln!(f, "{line}");
    }
}

/// The directories scratch was made in (see [`remember_place`]).
pub fn remembered_places() -> Vec<PathBuf> {
    let Some(state) = state_dir() else {
        return vec![];
    };
    std::fs::read_to_string(state.join(PLACES))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wv-output-{name}-{}", random_hex(4)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_unnamed_file_has_no_name_until_linked() {
        let d = tmp("unnamed");
        let f = PlaintextFile::create_in(&d).unwrap();
        assert!(f.is_unnamed(), "this filesystem has O_TMPFILE");
        use std::os::unix::fs::FileExt;
        f.file().write_all_at(b"secret", 0).unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        f.link_to(&d.join("out")).unwrap();
        assert_eq!(std::fs::read(d.join("out")).unwrap(), b"secret");
        // Dropped unlinked: nothing.
        let g = PlaintextFile::create_in(&d).unwrap();
        g.file().write_all_at(b"gone", 0).unwrap();
        drop(g);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_named_fallback_is_removed_unless_linked() {
        let d = tmp("named");
        let f = PlaintextFile::create_named_in(&d).unwrap();
        assert!(!f.is_unnamed());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        drop(f);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let f = PlaintextFile::create_named_in(&d).unwrap();
        f.link_to(&d.join("out")).unwrap();
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert!(d.join("out").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_held_scratch_is_never_swept_and_an_abandoned_one_is() {
        let d = tmp("sweep");
        let target = d.join("model");
        let s = Scratch::beside(&target, "partial", false).unwrap();
        std::fs::write(s.path().join("x"), b"1234").unwrap();
        assert!(sweep(&d, "", false).unwrap().is_empty(), "in use");
        // A second taker of a stable scratch is refused while the first holds it.
        let st = Scratch::beside(&target, "partial", true).unwrap();
        assert!(matches!(
            Scratch::beside(&target, "partial", true),
            Err(ScratchError::Busy(_))
        ));
        drop(st);
        // Abandoned: a directory of an earlier version (no lock), and one kept.
        std::fs::create_dir(d.join(".model.weightvault-partial-0000")).unwrap();
        std::fs::write(d.join(".model.weightvault-partial-0000/y"), b"12").unwrap();
        let mut k = Scratch::beside(&target, "partial", true).unwrap();
        k.keep();
        drop(k);
        std::fs::write(d.join("unrelated"), b"keep me").unwrap();
        let dry = sweep(&d, "", true).unwrap();
        assert_eq!(dry.len(), 2, "{dry:?}");
        assert!(dry.iter().all(|l| !l.removed));
        let gone = sweep(&d, "", false).unwrap();
        assert_eq!(gone.len(), 2);
        assert_eq!(
            gone.iter()
                .find(|l| l.kind == LeftoverKind::PartialOutput)
                .unwrap()
                .bytes,
            2
        );
        assert!(sweep(&d, "", false).unwrap().is_empty());
        drop(s);
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("unrelated")]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
