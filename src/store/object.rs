//! Where sealed objects live, behind two traits: [`RangeRead`] (one sealed object read by byte
//! ranges, so any chunk decrypts on its own) and [`SealedStore`] (a vault's revisions: listing,
//! the manifest and files of one, the shred mark, key-slot writes, writing a new revision and
//! removing one). [`LocalDir`] is the vault directory as it has always been laid out
//! (`models/<model>/<rev>/manifest.sealed`, `files/<path>.sealed`, `SHREDDED`); object storage
//! (`super::bucket`) is another implementation, not another path through the callers. The
//! revision integrity rules (the manifest lists exactly the files present, each header matches
//! its entry) stay in `store::Vault::open_revision`, above both, so every implementation is
//! held to them.
//!
//! Writing goes through [`RevisionSink`] (one per revision being sealed) and [`ObjectSink`]
//! (one per sealed object): ciphertext at its offsets while chunks are encrypted, then the head
//! at offset 0 once every tag is known. Every object is created once: a revision is never
//! overwritten, by a check *and* by the store (a local `create_new` and a rename that fails onto
//! an existing revision; a bucket's `If-None-Match: *`).

use super::mapped::MappedRange;
use super::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use weightvault_core::names::{model_dir, model_of_dir};

/// One sealed object, read by byte ranges.
pub trait RangeRead: Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;

    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly `buf.len()` bytes from `offset` into `buf`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// `len` bytes from `offset` to *authenticate* (`verify`), never to release plaintext
    /// from: a local file maps them (no copy; see `store::mapped` for why only here), other
    /// implementations read them.
    fn view(&self, offset: u64, len: usize) -> std::io::Result<View> {
        let mut b = vec![0u8; len];
        self.read_exact_at(&mut b, offset)?;
        Ok(View::Owned(b))
    }
}

/// Bytes of an object to authenticate: mapped or read.
pub enum View {
    /// A read-only map of a local file.
    Mapped(MappedRange),
    /// A copy.
    Owned(Vec<u8>),
}

impl std::ops::Deref for View {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            View::Mapped(m) => m,
            View::Owned(v) => v,
        }
    }
}

/// A sealed file in a local directory.
pub struct LocalObject {
    file: File,
    len: u64,
}

impl LocalObject {
    /// Opens a local sealed file for reading.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("reading", path, e))?
            .len();
        Ok(LocalObject { file, len })
    }
}

impl RangeRead for LocalObject {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn view(&self, offset: u64, len: usize) -> std::io::Result<View> {
        super::mapped::map_range(&self.file, offset, len).map(View::Mapped)
    }
}

/// An object of a revision: its manifest, or one of its files (by path in the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectName<'a> {
    /// The sealed manifest.
    Manifest,
    /// A sealed file, by its path in the checkpoint directory.
    File(&'a str),
}

/// One object of a vault, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Model.
    pub model: String,
    /// Revision.
    pub rev: String,
    /// The file's path in the checkpoint, or `None` for the manifest.
    pub file: Option<String>,
}

impl ObjectRef {
    /// Which object of its revision it is.
    pub fn name(&self) -> ObjectName<'_> {
        match &self.file {
            Some(p) => ObjectName::File(p),
            None => ObjectName::Manifest,
        }
    }

    /// How records and messages name it: `models/<model>/<rev>/manifest.sealed` or
    /// `models/<model>/<rev>/files/<path>.sealed` (its place in a vault directory, whatever the
    /// store).
    pub fn label(&self) -> String {
        match &self.file {
            Some(p) => format!(
                "models/{}/{}/files/{p}.sealed",
                model_dir(&self.model),
                self.rev
            ),
            None => format!(
                "models/{}/{}/{}",
                model_dir(&self.model),
                self.rev,
                super::MANIFEST_FILE
            ),
        }
    }
}

/// What a store holds under a model and revision name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionState {
    /// Nothing: no such model, or no such revision of it.
    Absent {
        /// Whether the model exists at all.
        model: bool,
    },
    /// Something, but no manifest: a damaged revision.
    NoManifest,
    /// A revision with its manifest (not yet authenticated).
    Sealed,
}

/// One sealed object being written, by one thread. Dropped without [`ObjectSink::finish`], it
/// leaves nothing readable under its name (a local temporary file inside the revision's
/// staging directory; an aborted multipart upload).
pub trait ObjectSink: Send {
    /// Writes ciphertext `bytes` at `offset` (at or after the data offset; any order, each
    /// byte once).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// Writes `head` at offset 0, makes the object `len` bytes long and durable, and creates it
    /// under its name.
    fn finish(self: Box<Self>, head: &[u8], len: u64) -> Result<(), StoreError>;
}

/// A revision being written: its objects, then [`RevisionSink::publish`]. Dropped before
/// publishing, it leaves no revision that `list` shows.
pub trait RevisionSink: Send {
    /// A new object of the revision, `len` bytes long, whose head (written last) is its first
    /// `head_len` bytes.
    fn create(
        &mut self,
        object: ObjectName<'_>,
        head_len: u64,
        len: u64,
    ) -> Result<Box<dyn ObjectSink + '_>, StoreError>;

    /// Every object, the manifest last, is written: make the revision visible.
    fn publish(self: Box<Self>) -> Result<(), StoreError>;
}

/// Where a vault's sealed revisions live.
pub trait SealedStore: Send + Sync {
    /// Model names, sorted.
    fn models(&self) -> Result<Vec<String>, StoreError>;

    /// The revisions of `model` that have a manifest, sorted; `None` when there is no such
    /// model.
    fn revisions(&self, model: &str) -> Result<Option<Vec<String>>, StoreError>;

    /// What is stored under `model@rev`.
    fn state(&self, model: &str, rev: &str) -> Result<RevisionState, StoreError>;

    /// When the revision was crypto-shredded (`" on <time>"`, or `""` when the mark names no
    /// time), or `None`.
    fn shredded(&self, model: &str, rev: &str) -> Result<Option<String>, StoreError>;

    /// The paths (in the checkpoint) of the sealed files present under the revision, sorted.
    fn files(&self, model: &str, rev: &str) -> Result<Vec<String>, StoreError>;

    /// Opens one object of a revision; also gives its name for messages.
    fn open(
        &self,
        model: &str,
        rev: &str,
        object: ObjectName<'_>,
    ) -> Result<(Box<dyn RangeRead>, String), StoreError>;

    /// Writes `bytes` at `offset` of an object (its key slots: nothing else of a sealed object
    /// ever changes) and makes the write durable before returning.
    fn write_key_slots(&self, o: &ObjectRef, offset: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// Marks a revision crypto-shredded (the mark is `mark`, JSON with its time), durably;
    /// keeps an existing mark.
    fn mark_shredded(&self, model: &str, rev: &str, mark: &[u8]) -> Result<(), StoreError>;

    /// Starts writing the new revision `model@rev`: refused with
    /// [`StoreError::AlreadySealed`] when anything of that name exists.
    fn begin_revision(
        &self,
        model: &str,
        rev: &str,
    ) -> Result<Box<dyn RevisionSink + '_>, StoreError>;

    /// Deletes every object of `model@rev` (the manifest first, so an interruption leaves no
    /// revision that lists shows half-removed) and returns how many objects and bytes went.
    fn remove_revision(&self, model: &str, rev: &str) -> Result<(usize, u64), StoreError>;

    /// Where the store is, for messages (`<vault>/models` or `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Where a revision is, for messages.
    fn revision_location(&self, model: &str, rev: &str) -> String {
        format!("{}/{model}/{rev}", self.location())
    }

    /// Every object of a revision (its files, then its manifest), in label order.
    fn objects(&self, model: &str, rev: &str) -> Result<Vec<ObjectRef>, StoreError> {
        let mut v: Vec<ObjectRef> = self
            .files(model, rev)?
            .into_iter()
            .map(|p| ObjectRef {
                model: model.into(),
                rev: rev.into(),
                file: Some(p),
            })
            .chain(std::iter::once(ObjectRef {
                model: model.into(),
                rev: rev.into(),
                file: None,
            }))
            .collect();
        v.sort_by_key(ObjectRef::label);
        Ok(v)
    }
}

/// The vault directory's `models/` tree.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The store under `root` (a vault's `models` directory).
    pub fn new(root: PathBuf) -> Self {
        LocalDir { root }
    }

    /// The directory of a revision.
    pub fn revision_dir(&self, model: &str, rev: &str) -> PathBuf {
        self.root.join(&*model_dir(model)).join(rev)
    }

    /// Where an object is.
    pub fn path(&self, model: &str, rev: &str, object: ObjectName<'_>) -> PathBuf {
        let d = self.revision_dir(model, rev);
        match object {
            ObjectName::Manifest => d.join(super::MANIFEST_FILE),
            ObjectName::File(p) => d.join("files").join(format!("{p}.sealed")),
        }
    }
}

impl SealedStore for LocalDir {
    fn models(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .map(|n| model_of_dir(&n))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io("listing", &self.root, e)),
        };
        names.sort();
        Ok(names)
    }

    fn revisions(&self, model: &str) -> Result<Option<Vec<String>>, StoreError> {
        let d = self.root.join(&*model_dir(model));
        if !d.is_dir() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).map_err(|e| StoreError::io("listing", &d, e))? {
            let e = e.map_err(|e| StoreError::io("listing", &d, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.path().join(super::MANIFEST_FILE).exists() {
                out.push(name);
            }
        }
        out.sort();
        Ok(Some(out))
    }

    fn state(&self, model: &str, rev: &str) -> Result<RevisionState, StoreError> {
        let dir = self.revision_dir(model, rev);
        Ok(if dir.join(super::MANIFEST_FILE).is_file() {
            RevisionState::Sealed
        } else if dir.is_dir() {
            RevisionState::NoManifest
        } else {
            RevisionState::Absent {
                model: self.root.join(&*model_dir(model)).is_dir(),
            }
        })
    }

    fn shredded(&self, model: &str, rev: &str) -> Result<Option<String>, StoreError> {
        Ok(super::shredded_at(&self.revision_dir(model, rev)))
    }

    fn files(&self, model: &str, rev: &str) -> Result<Vec<String>, StoreError> {
        let files_dir = self.revision_dir(model, rev).join("files");
        let mut found = Vec::new();
        if files_dir.is_dir() {
            list_sealed(&files_dir, &files_dir, &mut found)?;
        }
        found.sort();
        Ok(found)
    }

    fn open(
        &self,
        model: &str,
        rev: &str,
        object: ObjectName<'_>,
    ) -> Result<(Box<dyn RangeRead>, String), StoreError> {
        let p = self.path(model, rev, object);
        Ok((Box::new(LocalObject::open(&p)?), p.display().to_string()))
    }

    fn write_key_slots(&self, o: &ObjectRef, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(&o.model, &o.rev, o.name());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("opening for a key slot write", &path, e))?;
        f.write_all_at(bytes, offset)
            .and_then(|()| f.sync_data())
            .map_err(|e| StoreError::io("writing the key slots of", &path, e))
    }

    fn begin_revision(
        &self,
        model: &str,
        rev: &str,
    ) -> Result<Box<dyn RevisionSink + '_>, StoreError> {
        let target = self.revision_dir(model, rev);
        let already = || StoreError::AlreadySealed {
            model: model.into(),
            revision: rev.into(),
        };
        if target.exists() {
            return Err(already());
        }
        let model_dir = self.root.join(&*model_dir(model));
        std::fs::create_dir_all(&model_dir)
            .map_err(|e| StoreError::io("creating", &model_dir, e))?;
        // Abandoned seals of this revision (a crash, or an earlier version's `.staging-*`).
        for prefix in [format!(".{rev}.weightvault-"), format!(".staging-{rev}-")] {
            let _ = super::output::sweep(&model_dir, &prefix, false);
        }
        let scratch = super::output::Scratch::beside(&target, "staging", false)?;
        let staging = scratch.path().join("revision");
        std::fs::create_dir(&staging).map_err(|e| StoreError::io("creating", &staging, e))?;
        Ok(Box::new(LocalRevision {
            dirs: vec![staging.clone()],
            staging,
            scratch,
            target,
            already: already(),
        }))
    }

    fn remove_revision(&self, model: &str, rev: &str) -> Result<(usize, u64), StoreError> {
        let dir = self.revision_dir(model, rev);
        let mut files = Vec::new();
        super::rotation::walk_sealed(&dir, &mut files)?;
        let bytes = files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let scratch = super::output::Scratch::beside(&dir, "removed", false)?;
        let moved = scratch.path().join("revision");
        std::fs::rename(&dir, &moved).map_err(|e| StoreError::io("removing", &dir, e))?;
        super::sync_dir(&self.root.join(&*model_dir(model)))?;
        drop(scratch);
        Ok((files.len(), bytes))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn mark_shredded(&self, model: &str, rev: &str, mark: &[u8]) -> Result<(), StoreError> {
        let dir = self.revision_dir(model, rev);
        if super::shredded_at(&dir).is_some() {
            return Ok(());
        }
        let tmp = dir.join(format!(".{}.tmp", super::SHREDDED_FILE));
        super::write_synced(&tmp, mark)?;
        std::fs::rename(&tmp, dir.join(super::SHREDDED_FILE))
            .map_err(|e| StoreError::io("writing", &dir, e))?;
        super::sync_dir(&dir)
    }
}

/// A revision being sealed into a local vault: a staging directory beside where it goes,
/// renamed into place once every file and the manifest are written and synced.
struct LocalRevision {
    scratch: super::output::Scratch,
    staging: PathBuf,
    target: PathBuf,
    /// Directories made, to sync before the rename.
    dirs: Vec<PathBuf>,
    already: StoreError,
}

impl RevisionSink for LocalRevision {
    fn create(
        &mut self,
        object: ObjectName<'_>,
        _head_len: u64,
        _len: u64,
    ) -> Result<Box<dyn ObjectSink + '_>, StoreError> {
        let out = match object {
            ObjectName::Manifest => self.staging.join(super::MANIFEST_FILE),
            ObjectName::File(p) => self.staging.join("files").join(format!("{p}.sealed")),
        };
        let parent = out.parent().expect("has a parent");
        if !self.dirs.iter().any(|d| d == parent) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io("creating", parent, e))?;
            self.dirs.push(parent.to_path_buf());
        }
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&out)
            .map_err(|e| StoreError::io("creating", &out, e))?;
        Ok(Box::new(LocalSink::new(f, out)))
    }

    fn publish(self: Box<Self>) -> Result<(), StoreError> {
        let this = *self;
        for d in this.dirs.iter().rev() {
            super::sync_dir(d)?;
        }
        super::revision::interrupted()?;
        match this.scratch.publish(&this.staging, &this.target) {
            Ok(()) => Ok(()),
            Err(_) if this.target.exists() => Err(this.already),
            Err(e) => Err(StoreError::io("renaming into place", &this.target, e)),
        }
    }
}

/// A sealed file being written to a local disk, flushed in the background as it grows.
struct LocalSink {
    file: File,
    path: PathBuf,
    writeback: Option<super::sealed::Writeback>,
}

impl LocalSink {
    fn new(file: File, path: PathBuf) -> Self {
        let writeback = super::sealed::Writeback::start(&file);
        LocalSink {
            file,
            path,
            writeback,
        }
    }
}

impl ObjectSink for LocalSink {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| StoreError::io("writing", &self.path, e))?;
        if let Some(w) = &self.writeback {
            w.wrote(bytes.len() as u64);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: &[u8], len: u64) -> Result<(), StoreError> {
        drop(self.writeback.take());
        let io = |e| StoreError::io("writing", &self.path, e);
        self.file.write_all_at(head, 0).map_err(io)?;
        // An empty tail still needs the file to reach its full length.
        self.file.set_len(len).map_err(io)?;
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("syncing", &self.path, e))
    }
}

/// The `.sealed` files under `dir`, as paths relative to `root` without the suffix; anything
/// else is a file that does not belong in a sealed revision.
fn list_sealed(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
    for e in std::fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))? {
        let e = e.map_err(|e| StoreError::io("listing", dir, e))?;
        let p = e.path();
        let ft = e
            .file_type()
            .map_err(|e| StoreError::io("reading", &p, e))?;
        if ft.is_dir() {
            list_sealed(root, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            match rel.strip_suffix(".sealed") {
                Some(r) => out.push(r.to_string()),
                None => {
                    return Err(StoreError::Mismatch(format!(
                        "{}: unexpected file in a sealed revision",
                        p.display()
                    )))
                }
            }
        }
    }
    Ok(())
}
