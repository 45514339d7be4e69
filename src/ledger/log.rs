//! The durable, append-only log behind the ledger: write-once segments, group commit, crash
//! recovery, and fail-closed appends.
//!
//! The log is a directory of segment files `seg-<index of first entry, 20 digits>.log`. Every
//! segment but the last holds exactly `2^bits` entries (default 2^16) and is *closed*: made
//! read-only and never opened for writing again, so it can be shipped to write-once storage.
//! Because a closed segment starts at a multiple of its size, the Merkle root of its entries is
//! a node of the ledger's tree (RFC 6962 splits at powers of two), and the tree over all
//! entries is exactly the tree over segment roots plus the open segment.
//!
//! Frame: `u32 BE length || entry || SHA-256 leaf hash of entry` (the RFC 6962 leaf hash,
//! which doubles as the frame's checksum), read by [`weightvault_ledger::frames`]. Appenders
//! queue frames; whichever finds no write in progress writes every queued frame with one
//! `write` and one `fdatasync` per segment touched, then wakes the others. [`Log::append`]
//! returns an entry's index only after it is durable; after any write or sync failure every
//! append is refused (fail closed) until the log is reopened.

use super::merkle::{self, Hash, Levels, Subtrees};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use weightvault_ledger::frames::{self, Frames};

pub use weightvault_ledger::frames::MAX_ENTRY;

/// Entries per closed segment, as a power of two: 2^16 = 65,536.
pub const DEFAULT_SEGMENT_BITS: u32 = 16;

/// Ledger storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// I/O failure; nothing may be released.
    #[error(
        "ledger {path}: {action}: {source} — releases are refused until the ledger is writable"
    )]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write failed: the log refuses appends until reopened.
    #[error("ledger {0}: an earlier write failed ({1}); releases are refused until the ledger is reopened")]
    FailedClosed(PathBuf, String),
    /// An entry inside the log (not at its end) is damaged.
    #[error("ledger {path}: entry {index} at byte {offset} is damaged — the log was altered")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Entry index (in the whole log).
        index: u64,
        /// Byte offset of its frame in the segment.
        offset: u64,
    },
    /// The final write is incomplete (a crash; reopening the log discards it).
    #[error("ledger {path}: a torn final write of {bytes} bytes after entry {index} — a crash; reopening the ledger discards it")]
    Torn {
        /// Segment file.
        path: PathBuf,
        /// Entries before it (in the whole log).
        index: u64,
        /// Bytes of the torn write.
        bytes: u64,
    },
    /// The set of segments is not what the format allows (missing, extra, short or long).
    #[error("ledger {path}: {why}")]
    Segments {
        /// Segment file or directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Entry too large.
    #[error("ledger entry of {0} bytes exceeds {MAX_ENTRY}")]
    TooLarge(usize),
    /// Another process has the log open for appending.
    #[error("ledger {0} is in use by another weightvault process (a running `weightvault serve`?): one process appends at a time; the service signs checkpoints itself")]
    Busy(PathBuf),
}

fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.into(),
        action,
        source,
    }
}

/// Scans one segment's bytes (see [`frames::scan`]), naming a damaged frame by its index in
/// the whole log and its segment file.
fn scan(path: &Path, first: u64, bytes: &[u8], check: bool) -> Result<Frames, LogError> {
    frames::scan(bytes, check).map_err(|d| LogError::Corrupt {
        path: path.into(),
        index: first + d.index as u64,
        offset: d.offset as u64,
    })
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

/// The segment files of `dir`, by first index, and the segment size they imply (`None` while
/// there is only one segment). Anything else named `seg-*` is an error.
type SegmentList = (Vec<(u64, PathBuf)>, Option<u32>);

fn list_segments(dir: &Path) -> Result<SegmentList, LogError> {
    let mut segs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir, "listing segments"))? {
        let e = e.map_err(io_err(dir, "listing segments"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(num) = name.strip_prefix("seg-") {
            let first = num
                .strip_suffix(".log")
                .filter(|d| d.len() == 20)
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(|| LogError::Segments {
                    path: e.path(),
                    why: "not a segment name (seg-<20 digits>.log)".into(),
                })?;
            segs.push((first, e.path()));
        }
    }
    segs.sort();
    let bits = match segs.get(1) {
        None => None,
        Some((s, _)) if s.is_power_of_two() => Some(s.trailing_zeros()),
        Some((_, p)) => {
            return Err(LogError::Segments {
                path: p.clone(),
                why: "the second segment must start at a power of two".into(),
            })
        }
    };
    let size = bits.map_or(0, |b| 1u64 << b);
    for (k, (first, p)) in segs.iter().enumerate() {
        if *first != k as u64 * size {
            return Err(LogError::Segments {
                path: p.clone(),
                why: format!(
                    "segment {k} starts at entry {first}, expected {}: a segment is missing or extra",
                    k as u64 * size
                ),
            });
        }
    }
    Ok((segs, bits))
}

/// What opening or reading found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries recovered.
    pub entries: u64,
    /// Closed (write-once) segments.
    pub closed_segments: u64,
    /// Bytes of torn (incompletely written) final writes that were discarded.
    pub discarded_bytes: u64,
}

/// The tree of a segmented log: roots of closed segments, subtrees of the open one, and any
/// closed segment's subtrees loaded from its file for a proof.
struct TreeView<'a> {
    bits: u32,
    closed: &'a Levels,
    open: &'a Levels,
    loaded: HashMap<u64, Levels>,
}

impl Subtrees for TreeView<'_> {
    fn subtree(&self, level: u32, index: u64) -> Hash {
        if level >= self.bits {
            // Complete subtrees of whole segments are all closed.
            return self.closed.subtree(level - self.bits, index);
        }
        let per = self.bits - level;
        let seg = index >> per;
        let local = index - (seg << per);
        if seg == self.closed.len() {
            self.open.subtree(level, local)
        } else {
            self.loaded
                .get(&seg)
                .expect("segment loaded before use")
                .subtree(level, local)
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, LogError> {
    std::fs::read(path).map_err(io_err(path, "reading"))
}

/// The subtrees of closed segment `seg`, from its file.
fn load_levels(dir: &Path, bits: u32, seg: u64) -> Result<Levels, LogError> {
    let first = seg << bits;
    let path = dir.join(segment_name(first));
    let bytes = read_file(&path)?;
    let s = scan(&path, first, &bytes, false)?;
    let mut lv = Levels::default();
    s.frames.iter().for_each(|f| lv.push(f.leaf));
    Ok(lv)
}

/// Closed segment roots and open-segment subtrees: enough for any tree head or proof.
#[derive(Default)]
struct Tree {
    closed: Levels,
    open: Levels,
}

impl Tree {
    fn len(&self, bits: u32) -> u64 {
        (self.closed.len() << bits) + self.open.len()
    }

    fn push(&mut self, bits: u32, leaf: Hash) {
        self.open.push(leaf);
        if self.open.len() == 1 << bits {
            self.closed.push(self.open.root());
            self.open = Levels::default();
        }
    }

    /// Runs `f` on a view of the tree with the inner subtrees loaded of the closed segments
    /// that hold an entry of `indexes` or end a tree of one of `sizes` part-way.
    fn view<R>(
        &self,
        dir: &Path,
        bits: u32,
        indexes: &[u64],
        sizes: &[u64],
        f: impl FnOnce(&TreeView<'_>) -> R,
    ) -> Result<R, LogError> {
        let partial = sizes
            .iter()
            .filter(|s| *s % (1u64 << bits.min(62)) != 0)
            .map(|s| s >> bits);
        let mut loaded = HashMap::new();
        for seg in indexes.iter().map(|i| i >> bits).chain(partial) {
            if seg < self.closed.len() && !loaded.contains_key(&seg) {
                loaded.insert(seg, load_levels(dir, bits, seg)?);
            }
        }
        Ok(f(&TreeView {
            bits,
            closed: &self.closed,
            open: &self.open,
            loaded,
        }))
    }

    fn root(&self, dir: &Path, bits: u32, size: u64) -> Result<Hash, LogError> {
        if size > self.len(bits) {
            return Err(LogError::Segments {
                path: dir.into(),
                why: format!(
                    "no tree of {size} entries: the log holds {}",
                    self.len(bits)
                ),
            });
        }
        self.view(dir, bits, &[], &[size], |v| merkle::range_root(v, 0, size))
    }

    fn inclusion(
        &self,
        dir: &Path,
        bits: u32,
        index: u64,
        size: u64,
    ) -> Result<Option<Vec<Hash>>, LogError> {
        if index >= size || size > self.len(bits) {
            return Ok(None);
        }
        self.view(dir, bits, &[index], &[size], |v| {
            merkle::inclusion_proof_in(v, index, size)
        })
    }

    fn consistency(
        &self,
        dir: &Path,
        bits: u32,
        old: u64,
        size: u64,
    ) -> Result<Option<Vec<Hash>>, LogError> {
        if old > size || size > self.len(bits) {
            return Ok(None);
        }
        self.view(dir, bits, &[], &[old, size], |v| {
            merkle::consistency_proof_in(v, old, size)
        })
    }
}

/// Called with each entry's index and bytes; an `Err` stops the read, naming the entry.
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), VisitError> + 'a;

/// Why a visitor stopped a read: whatever its own error was.
pub type VisitError = Box<dyn std::error::Error + Send + Sync>;

/// Hands one entry to a reader's visitor; its refusal names the entry and its segment.
fn visit_entry(
    visit: &mut Visit<'_>,
    path: &Path,
    index: u64,
    entry: &[u8],
) -> Result<(), LogError> {
    visit(index, entry).map_err(|why| LogError::Segments {
        path: path.to_path_buf(),
        why: format!("entry {index}: {why}"),
    })
}

/// Reads up to `max` entries of the log in `dir` from index `from` on, in order, opening only
/// the segments that hold them; an append in progress at the end is not read. For a
/// publisher that integrates what was appended since it last did.
pub fn read_range(dir: &Path, from: u64, max: usize) -> Result<Vec<Vec<u8>>, LogError> {
    let (segs, _) = list_segments(dir)?;
    let mut out = Vec::new();
    for (k, (first, path)) in segs.iter().enumerate() {
        if out.len() >= max {
            break;
        }
        // Skip segments that end before `from` (the next one starts at or before it).
        if segs.get(k + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let bytes = read_file(path)?;
        let s = scan(path, *first, &bytes, false)?;
        for (j, f) in s.frames.iter().enumerate() {
            let i = first + j as u64;
            if i >= from && out.len() < max {
                out.push(bytes[f.entry.clone()].to_vec());
            }
        }
    }
    Ok(out)
}

/// A read-only view of a log directory, for auditors: reads every segment (calling `visit`
/// with each entry), checks the segment structure and, with `check`, every frame hash. A torn
/// final write is reported, not skipped or repaired.
pub struct LogReader {
    dir: PathBuf,
    bits: u32,
    tree: Tree,
}

impl LogReader {
    /// Reads the log in `dir`. An incomplete final frame is an error (an auditor is told).
    pub fn read(dir: &Path, check: bool, visit: &mut Visit<'_>) -> Result<Self, LogError> {
        Self::read_with(dir, check, false, visit)
    }

    /// Like [`LogReader::read`]; with `live`, an incomplete final frame of the open segment is
    /// skipped as an append in progress (reading while the service writes).
    pub fn read_with(
        dir: &Path,
        check: bool,
        live: bool,
        visit: &mut Visit<'_>,
    ) -> Result<Self, LogError> {
        let (segs, bits) = list_segments(dir)?;
        let bits = bits.unwrap_or(63);
        let mut tree = Tree::default();
        let last = segs.len().saturating_sub(1);
        for (k, (first, path)) in segs.iter().enumerate() {
            let bytes = read_file(path)?;
            let s = scan(path, *first, &bytes, check)?;
            if s.end < bytes.len() && !(live && k == last) {
                return Err(LogError::Torn {
                    path: path.clone(),
                    index: first + s.frames.len() as u64,
                    bytes: (bytes.len() - s.end) as u64,
                });
            }
            check_count(path, bits, k < last, s.frames.len() as u64)?;
            for (j, f) in s.frames.iter().enumerate() {
                visit_entry(visit, path, first + j as u64, &bytes[f.entry.clone()])?;
                tree.push(bits, f.leaf);
            }
        }
        Ok(Self {
            dir: dir.into(),
            bits,
            tree,
        })
    }

    /// Entries in the log.
    pub fn len(&self) -> u64 {
        self.tree.len(self.bits)
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closed segments.
    pub fn closed_segments(&self) -> u64 {
        self.tree.closed.len()
    }

    /// Root of the tree of the first `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        self.tree.root(&self.dir, self.bits, size)
    }

    /// Inclusion proof of `index` in the tree of the first `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Hash>>, LogError> {
        self.tree.inclusion(&self.dir, self.bits, index, size)
    }

    /// Consistency proof from the first `old` to the first `size` entries.
    pub fn consistency_proof(&self, old: u64, size: u64) -> Result<Option<Vec<Hash>>, LogError> {
        self.tree.consistency(&self.dir, self.bits, old, size)
    }

    /// Every closed segment: its file, first entry, and Merkle root (a node of the tree).
    pub fn segments(&self) -> Vec<(PathBuf, u64, Hash)> {
        let per = 1u64 << self.bits.min(62);
        self.tree
            .closed
            .leaves()
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let first = k as u64 * per;
                (self.dir.join(segment_name(first)), first, *h)
            })
            .collect()
    }
}

fn check_count(path: &Path, bits: u32, closed: bool, n: u64) -> Result<(), LogError> {
    let size = 1u64.checked_shl(bits).unwrap_or(u64::MAX);
    let bad = if closed { n != size } else { n > size };
    if bad {
        return Err(LogError::Segments {
            path: path.into(),
            why: format!(
                "holds {n} entries; a {} segment holds {}{size}",
                if closed { "closed" } else { "open" },
                if closed { "exactly " } else { "at most " }
            ),
        });
    }
    Ok(())
}

struct Writer {
    file: File,
    path: PathBuf,
    bytes: u64,
    count: u64,
    first: u64,
}

struct State {
    queued: Vec<u8>,
    queued_frames: Vec<(usize, Hash)>,
    next_index: u64,
    durable: u64,
    flushing: bool,
    failed: Option<String>,
    tree: Tree,
}

/// An open, appendable log.
pub struct Log {
    dir: PathBuf,
    bits: u32,
    /// An exclusive lock on `dir/lock`, held while the log is open: one appending process.
    _lock: File,
    state: Mutex<State>,
    /// Only the appender that is flushing takes this lock.
    writer: Mutex<Writer>,
    flushed: Condvar,
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::durable::sync_dir(dir).map_err(io_err(dir, "syncing the directory"))
}

fn create_segment(dir: &Path, first: u64) -> Result<Writer, LogError> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path, "creating a segment"))?;
    sync_dir(dir)?;
    Ok(Writer {
        file,
        path,
        bytes: 0,
        count: 0,
        first,
    })
}

/// Makes a full segment read-only for good and starts the next one.
fn close_segment(dir: &Path, w: &mut Writer) -> Result<(), LogError> {
    w.file
        .set_permissions(std::fs::Permissions::from_mode(0o444))
        .and_then(|()| w.file.sync_all())
        .map_err(io_err(&w.path, "closing a segment"))?;
    *w = create_segment(dir, w.first + w.count)?;
    Ok(())
}

/// The file an appender holds an exclusive lock on.
fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

impl Log {
    /// Whether a process holds the log in `dir` open for appending (the lock [`Log::open`]
    /// takes); nothing is created or changed.
    pub fn is_held(dir: &Path) -> bool {
        match File::open(lock_path(dir)) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Opens (or creates) the log in `dir` with the default segment size.
    pub fn open(dir: &Path) -> Result<(Self, Recovery), LogError> {
        Self::open_with(dir, DEFAULT_SEGMENT_BITS)
    }

    /// Opens (or creates) the log in `dir` with segments of `2^bits` entries: checks every
    /// frame, discards a torn final frame of the open segment, and closes it if it is full.
    pub fn open_with(dir: &Path, bits: u32) -> Result<(Self, Recovery), LogError> {
        Self::open_visiting(dir, bits, &mut |_, _| Ok(()))
    }

    /// [`Log::open_with`], calling `visit` with every entry it reads while opening (index,
    /// bytes), so that a caller that needs the entries does not read the log a second time.
    pub fn open_visiting(
        dir: &Path,
        bits: u32,
        visit: &mut Visit<'_>,
    ) -> Result<(Self, Recovery), LogError> {
        assert!((1..=40).contains(&bits), "segment bits out of range");
        std::fs::create_dir_all(dir).map_err(io_err(dir, "creating the directory"))?;
        let lock_path = lock_path(dir);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "opening the lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LogError::Busy(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(&lock_path, "locking")(e));
            }
        }
        let (segs, found) = list_segments(dir)?;
        if let Some(b) = found.filter(|b| *b != bits) {
            return Err(LogError::Segments {
                path: dir.into(),
                why: format!("segments hold 2^{b} entries; this log was opened for 2^{bits}"),
            });
        }
        let mut tree = Tree::default();
        let mut discarded = 0u64;
        let last = segs.len().saturating_sub(1);
        let mut writer = None;
        for (k, (first, path)) in segs.iter().enumerate() {
            let bytes = read_file(path)?;
            let s = scan(path, *first, &bytes, true)?;
            let n = s.frames.len() as u64;
            if k < last {
                if s.end < bytes.len() {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        index: first + n,
                        offset: s.end as u64,
                    });
                }
                check_count(path, bits, true, n)?;
            } else {
                check_count(path, bits, false, n)?;
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io_err(path, "opening"))?;
                if s.end < bytes.len() {
                    discarded = (bytes.len() - s.end) as u64;
                    file.set_len(s.end as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(io_err(path, "truncating the torn tail"))?;
                }
                std::io::Write::flush(&mut file).map_err(io_err(path, "opening"))?;
                writer = Some(Writer {
                    file,
                    path: path.clone(),
                    bytes: s.end as u64,
                    count: n,
                    first: *first,
                });
            }
            for (j, f) in s.frames.iter().enumerate() {
                visit_entry(visit, path, first + j as u64, &bytes[f.entry.clone()])?;
                tree.push(bits, f.leaf);
            }
        }
        let mut writer = match writer {
            Some(w) => w,
            None => create_segment(dir, 0)?,
        };
        if writer.count == 1 << bits {
            // Crashed between filling a segment and starting the next.
            close_segment(dir, &mut writer)?;
        }
        let count = tree.len(bits);
        let rec = Recovery {
            entries: count,
            closed_segments: tree.closed.len(),
            discarded_bytes: discarded,
        };
        Ok((
            Self {
                dir: dir.into(),
                bits,
                _lock: lock,
                state: Mutex::new(State {
                    queued: Vec::new(),
                    queued_frames: Vec::new(),
                    next_index: count,
                    durable: count,
                    flushing: false,
                    failed: None,
                    tree,
                }),
                writer: Mutex::new(writer),
                flushed: Condvar::new(),
            },
            rec,
        ))
    }

    /// Appends an entry; returns its index once it is on disk. An error means it may not be:
    /// the caller must not release anything.
    pub fn append(&self, entry: &[u8]) -> Result<u64, LogError> {
        if entry.len() > MAX_ENTRY {
            return Err(LogError::TooLarge(entry.len()));
        }
        let mut st = self.state.lock().expect("ledger lock");
        if let Some(f) = &st.failed {
            return Err(LogError::FailedClosed(self.dir.clone(), f.clone()));
        }
        let index = st.next_index;
        st.next_index += 1;
        let h = frames::encode(&mut st.queued, entry);
        st.queued_frames
            .push((frames::FRAME_OVERHEAD + entry.len(), h));
        loop {
            if st.durable > index {
                return Ok(index);
            }
            if let Some(f) = &st.failed {
                return Err(LogError::FailedClosed(self.dir.clone(), f.clone()));
            }
            if !st.flushing {
                // Become the writer for everything queued so far.
                st.flushing = true;
                let batch = std::mem::take(&mut st.queued);
                let frames = std::mem::take(&mut st.queued_frames);
                let upto = st.next_index;
                drop(st);
                let r = self.write_batch(&batch, &frames);
                st = self.state.lock().expect("ledger lock");
                st.flushing = false;
                match r {
                    Ok(()) => {
                        for (_, h) in &frames {
                            st.tree.push(self.bits, *h);
                        }
                        st.durable = upto;
                    }
                    Err(e) => st.failed = Some(e.to_string()),
                }
                self.flushed.notify_all();
            } else {
                st = self.flushed.wait(st).expect("ledger lock");
            }
        }
    }

    /// Writes queued frames, one write and one fdatasync per segment touched, closing every
    /// segment that fills.
    fn write_batch(&self, batch: &[u8], frames: &[(usize, Hash)]) -> Result<(), LogError> {
        let mut w = self.writer.lock().expect("ledger writer lock");
        let per = 1u64 << self.bits;
        let (mut off, mut k) = (0usize, 0usize);
        while k < frames.len() {
            let take = ((per - w.count) as usize).min(frames.len() - k);
            let len: usize = frames[k..k + take].iter().map(|(l, _)| l).sum();
            w.file
                .write_all_at(&batch[off..off + len], w.bytes)
                .and_then(|()| w.file.sync_data())
                .map_err(io_err(&w.path, "appending"))?;
            w.bytes += len as u64;
            w.count += take as u64;
            off += len;
            k += take;
            if w.count == per {
                close_segment(&self.dir, &mut w)?;
            }
        }
        Ok(())
    }

    /// Number of durable entries.
    pub fn len(&self) -> u64 {
        self.state.lock().expect("ledger lock").durable
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size and root of the tree of every durable entry.
    pub fn tree_head(&self) -> Result<(u64, Hash), LogError> {
        let st = self.state.lock().expect("ledger lock");
        let n = st.durable;
        Ok((n, st.tree.root(&self.dir, self.bits, n)?))
    }

    /// Inclusion proof of `index` in the tree of the first `size` durable entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Hash>>, LogError> {
        let st = self.state.lock().expect("ledger lock");
        st.tree.inclusion(&self.dir, self.bits, index, size)
    }

    /// Consistency proof from the first `old` to the first `size` durable entries.
    pub fn consistency_proof(&self, old: u64, size: u64) -> Result<Option<Vec<Hash>>, LogError> {
        let st = self.state.lock().expect("ledger lock");
        st.tree.consistency(&self.dir, self.bits, old, size)
    }
}
