//! Sealed files on disk: writing one from a source file, and reading one back (whole, by byte
//! range, or just checking it), chunk by chunk with bounded memory on every core.

use super::object::{LocalObject, ObjectName, RangeRead, RevisionSink};
use super::StoreError;
use crate::format::aead::{AwsLc, ChunkAead, TAG_LEN};
use crate::format::{
    encode_head, ChunkCodec, FormatError, KeySlot, Layout, ParsedHead, SealedHeader, KEY_SLOTS,
    KEY_SLOT_LEN,
};
use crate::hsm::{KeyWrap, WrappedKey};
use crate::keys::DataKey;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

/// Something that is told how many bytes were processed (a progress bar, or nothing).
pub trait Progress: Sync {
    /// `n` more bytes done.
    fn inc(&self, n: u64);
}

impl Progress for () {
    fn inc(&self, _: u64) {}
}

impl Progress for indicatif::ProgressBar {
    fn inc(&self, n: u64) {
        indicatif::ProgressBar::inc(self, n)
    }
}

/// Runs `produce(index, buffer)` for every chunk on `producers` threads and hands each filled
/// buffer to `consume(index, buffer)` on the calling thread, which is the only writer.
///
/// One writer because buffered writes to one file serialise on its inode lock anyway (perf
/// showed two writing threads spending a quarter of their time spinning on it); the producers
/// read and encrypt or decrypt meanwhile. Each producer owns two buffers of at most one chunk,
/// so memory stays bounded; buffers are zeroized at the end. Stops at the first error.
pub fn pipeline_chunks<E: Send>(
    layout: &Layout,
    producers: usize,
    produce: impl Fn(u64, &mut [u8]) -> Result<(), E> + Sync,
    mut consume: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    use std::sync::mpsc::{sync_channel, SyncSender};
    use zeroize::Zeroizing;
    type Buf = Zeroizing<Vec<u8>>;
    type Filled<E> = (usize, u64, Result<Buf, (Buf, E)>);
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let buf_len = (layout.plaintext_len.min(u64::from(layout.chunk_size))) as usize;
    let producers = producers.clamp(1, layout.chunk_count.min(64) as usize);
    let (full_tx, full_rx) = sync_channel::<Filled<E>>(producers * 2);
    let mut returns: Vec<SyncSender<Buf>> = Vec::with_capacity(producers);
    let mut first_err: Option<(u64, E)> = None;
    std::thread::scope(|scope| {
        for p in 0..producers {
            let (ret_tx, ret_rx) = sync_channel::<Buf>(2);
            returns.push(ret_tx);
            let full_tx = full_tx.clone();
            let (next, failed, produce) = (&next, &failed, &produce);
            scope.spawn(move || {
                let mut spare: Vec<Buf> = vec![Zeroizing::new(vec![0u8; buf_len]); 2];
                loop {
                    let buf = match spare.pop() {
                        Some(b) => b,
                        None => match ret_rx.recv() {
                            Ok(b) => b,
                            Err(_) => break,
                        },
                    };
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if failed.load(Ordering::Relaxed) || i >= layout.chunk_count {
                        break;
                    }
                    let (s, e) = layout.chunk_range(i);
                    let mut buf = buf;
                    let r = match produce(i, &mut buf[..(e - s) as usize]) {
                        Ok(()) => Ok(buf),
                        Err(err) => Err((buf, err)),
                    };
                    if full_tx.send((p, i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(full_tx);
        for (p, i, r) in full_rx.iter() {
            let buf = match r {
                Ok(buf) => {
                    if first_err.is_none() {
                        let (s, e) = layout.chunk_range(i);
                        if let Err(err) = consume(i, &buf[..(e - s) as usize]) {
                            failed.store(true, Ordering::Relaxed);
                            first_err = Some((i, err));
                        }
                    }
                    buf
                }
                Err((buf, err)) => {
                    failed.store(true, Ordering::Relaxed);
                    // Report the lowest failing chunk, so messages are deterministic.
                    if first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_err = Some((i, err));
                    }
                    buf
                }
            };
            if failed.load(Ordering::Relaxed) {
                // Producers waiting for a buffer must wake up and stop: close their returns.
                returns.clear();
                continue;
            }
            // A producer that has finished no longer takes buffers back; the buffer is
            // dropped (and zeroized) here then.
            let _ = returns[p].send(buf);
        }
        returns.clear();
    });
    match first_err {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Runs `f(index, buffer)` for every chunk of `layout` on up to `threads` threads, each with one
/// reusable buffer of at most one chunk. Stops at the first error and returns it.
pub fn for_each_chunk<E: Send>(
    layout: &Layout,
    threads: usize,
    f: impl Fn(u64, &mut [u8]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<(u64, E)>> = Mutex::new(None);
    let buf_len = (layout.plaintext_len.min(u64::from(layout.chunk_size))) as usize;
    let threads = threads.clamp(1, layout.chunk_count.min(64) as usize);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![0u8; buf_len];
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= layout.chunk_count {
                        break;
                    }
                    let (s, e) = layout.chunk_range(i);
                    if let Err(err) = f(i, &mut buf[..(e - s) as usize]) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_err.lock().expect("error mutex");
                        // Report the lowest failing chunk, so messages are deterministic.
                        if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                            *slot = Some((i, err));
                        }
                        break;
                    }
                }
                use zeroize::Zeroize;
                buf.zeroize();
            });
        }
    });
    match first_err.into_inner().expect("error mutex") {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Producer threads for a pipeline with one writer: one fewer than the threads allowed, at
/// least one.
fn producers(threads: usize) -> usize {
    threads.saturating_sub(1).max(1)
}

/// Bytes written between two background flushes.
const WRITEBACK_STEP: u64 = 64 << 20;

/// Runs `work` while a [`Writeback`] flushes `f`, counting the bytes `work` reports.
pub fn with_writeback<T>(f: &File, work: impl FnOnce(&AtomicU64) -> T) -> T {
    let counter = AtomicU64::new(0);
    match Writeback::start(f) {
        Some(w) => work(&w.written),
        None => work(&counter),
    }
}

/// A helper thread that asks the kernel to write a file's dirty pages to disk every
/// [`WRITEBACK_STEP`] bytes its writer reports, so that the fsync that follows has little left
/// to do and disk writes overlap encryption. Flush errors are ignored here: the writer's final
/// `sync_all` reports them. Stops when dropped.
pub struct Writeback {
    written: std::sync::Arc<AtomicU64>,
    done: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    /// Starts flushing `f` (through a second handle of the same open file); `None` when the
    /// handle cannot be duplicated (then nothing is flushed early).
    pub fn start(f: &File) -> Option<Self> {
        let f = f.try_clone().ok()?;
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let (w, d) = (written.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut flushed = 0;
            while !d.load(Ordering::Relaxed) {
                let now = w.load(Ordering::Relaxed);
                if now >= flushed + WRITEBACK_STEP {
                    let _ = f.sync_data();
                    flushed = now;
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        Some(Writeback {
            written,
            done,
            thread: Some(thread),
        })
    }

    /// `n` more bytes were written.
    pub fn wrote(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a sealed file's writer needs besides the source bytes.
pub struct SealParams<'a> {
    /// The immutable header (its `key_check` is filled in here).
    pub header: SealedHeader,
    /// The data key.
    pub dek: &'a DataKey,
    /// The data key wrapped by the HSM.
    pub wrapped: WrappedKey,
    /// Threads to use.
    pub threads: usize,
}

/// Result of sealing one file.
#[derive(Debug, Clone)]
pub struct SealedSummary {
    /// SHA-256 of prelude + header.
    pub header_hash: [u8; 32],
    /// Length of the sealed file.
    pub file_len: u64,
}

/// Seals `header.plaintext_len` bytes of `src` starting at `src_offset` into a new object of a
/// revision being written (`into`: the revision and the object's name), then finishes it
/// (durable, created once). Never writes plaintext.
pub fn seal_file<A: ChunkAead>(
    aead: A,
    p: SealParams<'_>,
    src: &File,
    src_offset: u64,
    into: (&mut dyn RevisionSink, ObjectName<'_>),
    progress: &dyn Progress,
) -> Result<SealedSummary, StoreError> {
    let mut header = p.header;
    header.key_check = ChunkCodec::<A>::key_check(p.dek, &header.file_id);
    let encoded = header
        .encode()
        .map_err(|e| StoreError::BadInput(format!("{}: {e}", header.path)))?;
    let (codec, header_tag) = ChunkCodec::for_sealing(aead, p.dek, &header, &encoded);
    let layout = *codec.layout();
    let mut sink = into
        .0
        .create(into.1, layout.data_offset, layout.file_len())?;
    let tags = Mutex::new(vec![[0u8; TAG_LEN]; layout.chunk_count as usize]);
    pipeline_chunks::<StoreError>(
        &layout,
        producers(p.threads),
        |i, buf| {
            let (s, _) = layout.chunk_range(i);
            src.read_exact_at(buf, src_offset + s)
                .map_err(|e| StoreError::io("reading the source of", Path::new(&header.path), e))?;
            let tag = codec.seal_chunk(i, buf);
            tags.lock().expect("tag mutex")[i as usize] = tag;
            Ok(())
        },
        |i, buf| {
            let (s, _) = layout.chunk_range(i);
            sink.write_at(layout.data_offset + s, buf)?;
            progress.inc(buf.len() as u64);
            crate::interrupt::check().map_err(StoreError::Interrupted)?;
            Ok(())
        },
    )?;
    let slot = codec
        .seal_key_slot(KeySlot::new(
            1,
            &p.wrapped.kek_label,
            p.wrapped.kek_version,
            p.wrapped.wrapped,
        ))
        .map_err(|e| StoreError::BadInput(format!("{}: {e}", header.path)))?;
    let slots: [Option<KeySlot>; KEY_SLOTS] = [Some(slot), None];
    let head = encode_head(
        &encoded,
        &header_tag,
        &slots,
        &tags.into_inner().expect("tag mutex"),
        &layout,
    )
    .map_err(|e| StoreError::BadInput(format!("{}: {e}", header.path)))?;
    sink.finish(&head, layout.file_len())?;
    Ok(SealedSummary {
        header_hash: crate::format::header_hash(&encoded),
        file_len: layout.file_len(),
    })
}

/// A key-slot write of a sealed object: `(offset, bytes)`, durable when it returns.
pub type SlotWrite<'a> = dyn Fn(u64, &[u8]) -> Result<(), StoreError> + 'a;

/// A sealed file whose head has been parsed but not yet authenticated.
pub struct SealedFile {
    /// Where it is (for messages, and key slot writes to a local file).
    pub path: PathBuf,
    object: Box<dyn RangeRead>,
    /// The parsed head.
    pub head: ParsedHead,
}

impl SealedFile {
    /// Opens a local sealed file and parses its head.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::from_object(path.into(), Box::new(LocalObject::open(path)?))
    }

    /// Parses the head of a sealed object (`path` names it in messages): magic, header, key
    /// slots, tag table, length and padding.
    pub fn from_object(path: PathBuf, object: Box<dyn RangeRead>) -> Result<Self, StoreError> {
        let file_len = object.len();
        let fe = |e: FormatError| StoreError::Format {
            what: path.display().to_string(),
            source: e,
        };
        let read = |n: u64| -> Result<Vec<u8>, StoreError> {
            let n = n.min(file_len) as usize;
            let mut b = vec![0u8; n];
            object
                .read_exact_at(&mut b, 0)
                .map_err(|e| StoreError::io("reading", &path, e))?;
            Ok(b)
        };
        let mut prefix = read(64 * 1024)?;
        if prefix.len() < crate::format::PRELUDE_LEN {
            return Err(fe(FormatError::BadMagic));
        }
        loop {
            let need = ParsedHead::needed(&prefix).map_err(fe)?;
            if need <= prefix.len() as u64 || prefix.len() as u64 == file_len {
                break;
            }
            prefix = read(need)?;
        }
        let head = ParsedHead::parse(&prefix, file_len).map_err(fe)?;
        Ok(Self { path, object, head })
    }

    /// Indices of the non-empty key slots, newest generation first.
    fn slot_order(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..KEY_SLOTS)
            .filter(|&i| self.head.slots[i].is_some())
            .collect();
        v.sort_by_key(|&i| std::cmp::Reverse(self.head.slots[i].as_ref().map(|s| s.generation)));
        v
    }

    /// The wrapped key of a slot.
    fn wrapped_of(slot: &KeySlot) -> WrappedKey {
        WrappedKey {
            kek_label: slot.kek_label.clone(),
            kek_version: slot.kek_version,
            wrapped: slot.wrapped.clone(),
        }
    }

    /// The newest key slot that opens, with its data key: the slot of the highest generation,
    /// or the other one when that fails (a rewrap torn by a crash, or its KEK retired too
    /// early). The first error is reported when none opens.
    fn unwrap_dek(&self, kw: &dyn KeyWrap, what: &str) -> Result<(usize, DataKey), StoreError> {
        let order = self.slot_order();
        let mut first = None;
        for &i in &order {
            let slot = self.head.slots[i].as_ref().expect("non-empty");
            let r = kw
                .unwrap(&Self::wrapped_of(slot))
                .map_err(|e| StoreError::Hsm {
                    what: what.into(),
                    source: e,
                })
                .and_then(|dek| {
                    self.codec_for(AwsLc, &dek, i)
                        .map(|_| dek)
                        .map_err(|e| StoreError::Format {
                            what: what.into(),
                            source: e,
                        })
                });
            match r {
                Ok(dek) => return Ok((i, dek)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| StoreError::Format {
            what: what.into(),
            source: FormatError::NoKeySlot,
        }))
    }

    fn codec_for<A: ChunkAead>(
        &self,
        aead: A,
        dek: &DataKey,
        slot: usize,
    ) -> Result<ChunkCodec<A>, FormatError> {
        ChunkCodec::new(
            aead,
            dek,
            &self.head.header,
            &self.head.encoded_header,
            &self.head.header_tag,
            self.head.slots[slot]
                .as_ref()
                .ok_or(FormatError::NoKeySlot)?,
        )
    }

    /// The KEK version of the key slot that opens the file now.
    pub fn opening_kek_version(&self, kw: &dyn KeyWrap, what: &str) -> Result<u32, StoreError> {
        let (i, _) = self.unwrap_dek(kw, what)?;
        Ok(self.head.slots[i]
            .as_ref()
            .expect("opening slot")
            .kek_version)
    }

    /// Unwraps the data key with the HSM and authenticates the header.
    pub fn unlock(self, kw: &dyn KeyWrap, what: &str) -> Result<OpenedFile<AwsLc>, StoreError> {
        let (i, dek) = self.unwrap_dek(kw, what)?;
        self.unlock_slot(AwsLc, &dek, i, what)
    }

    /// Authenticates the header with a known data key (against the newest slot whose MAC
    /// verifies with it).
    pub fn unlock_with<A: ChunkAead + Clone>(
        self,
        aead: A,
        dek: &DataKey,
        what: &str,
    ) -> Result<OpenedFile<A>, StoreError> {
        let order = self.slot_order();
        let i = order
            .iter()
            .copied()
            .find(|&i| self.codec_for(aead.clone(), dek, i).is_ok())
            .or(order.first().copied());
        match i {
            Some(i) => self.unlock_slot(aead, dek, i, what),
            None => Err(StoreError::Format {
                what: what.into(),
                source: FormatError::NoKeySlot,
            }),
        }
    }

    fn unlock_slot<A: ChunkAead>(
        self,
        aead: A,
        dek: &DataKey,
        slot: usize,
        what: &str,
    ) -> Result<OpenedFile<A>, StoreError> {
        let codec = self
            .codec_for(aead, dek, slot)
            .map_err(|e| StoreError::Format {
                what: what.into(),
                source: e,
            })?;
        Ok(OpenedFile {
            keys: Arc::new(FileKeys {
                what: what.into(),
                path: self.path,
                head: self.head,
                codec,
            }),
            object: self.object.into(),
        })
    }

    /// Rewraps the data key under the newest KEK version of `kw`, if the newest opening slot is
    /// under another: the new wrapped key goes into the *other* slot with the next generation
    /// and a fresh MAC (bound to the header hash, which does not cover the slots), written with
    /// one write by `write(offset, bytes)` (the store's key-slot write, durable when it
    /// returns). The header, tag table and ciphertext are not touched, and until the write is
    /// durable the old slot still opens the file. Returns the old and new versions, or `None`
    /// when already current.
    pub fn rewrap(
        &self,
        kw: &dyn KeyWrap,
        what: &str,
        write: &SlotWrite<'_>,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let (i, dek) = self.unwrap_dek(kw, what)?;
        let active = self.head.slots[i].as_ref().expect("opening slot");
        let w = kw.wrap(&dek).map_err(|e| StoreError::Hsm {
            what: what.into(),
            source: e,
        })?;
        if w.kek_version == active.kek_version && w.kek_label == active.kek_label {
            return Ok(None);
        }
        let fe = |e| StoreError::Format {
            what: what.into(),
            source: e,
        };
        let codec = self.codec_for(AwsLc, &dek, i).map_err(fe)?;
        let slot = codec
            .seal_key_slot(KeySlot::new(
                active.generation + 1,
                &w.kek_label,
                w.kek_version,
                w.wrapped,
            ))
            .map_err(fe)?;
        write(self.key_slot_offset(1 - i), &slot.encode().map_err(fe)?)?;
        Ok(Some((active.kek_version, w.kek_version)))
    }

    /// Where key slot `first` starts in the file (key-slot writes cover whole slots from
    /// there; nothing else of the file ever changes).
    pub fn key_slot_offset(&self, first: usize) -> u64 {
        assert!(first < KEY_SLOTS);
        self.head.layout.key_slots_offset + (first * KEY_SLOT_LEN) as u64
    }
}

/// What opening a sealed file established, without the object itself: the authenticated
/// head, the tag table and the data key. A long-lived holder (a release a service serves)
/// keeps this and attaches the object only while it reads, so an idle release holds no file.
pub struct FileKeys<A: ChunkAead> {
    what: String,
    /// Where it is.
    pub path: PathBuf,
    /// The authenticated head.
    pub head: ParsedHead,
    codec: ChunkCodec<A>,
}

impl<A: ChunkAead> FileKeys<A> {
    /// The authenticated header.
    pub fn header(&self) -> &SealedHeader {
        &self.head.header
    }

    /// SHA-256 of prelude + header.
    pub fn header_hash(&self) -> [u8; 32] {
        *self.codec.header_hash()
    }

    /// Reads through `object` again, which must be the same sealed file opened anew: its
    /// length and its prelude and header bytes are checked against what was authenticated (a
    /// file replaced since is refused here; any changed chunk would fail its tag anyway).
    pub fn attach(
        self: &Arc<Self>,
        object: Arc<dyn RangeRead>,
    ) -> Result<OpenedFile<A>, StoreError> {
        let mismatch = |why: &str| {
            StoreError::Mismatch(format!(
                "{}: {why} since it was opened — file replaced",
                self.what
            ))
        };
        if object.len() != self.head.layout.file_len() {
            return Err(mismatch("its length changed"));
        }
        let mut b = vec![0u8; self.head.encoded_header.len()];
        object
            .read_exact_at(&mut b, 0)
            .map_err(|e| StoreError::io("reading", &self.path, e))?;
        if b != self.head.encoded_header {
            return Err(mismatch("its header changed"));
        }
        Ok(OpenedFile {
            keys: self.clone(),
            object,
        })
    }
}

/// A sealed file with an authenticated header and a known data key, and the object to read
/// its chunks from.
pub struct OpenedFile<A: ChunkAead> {
    keys: Arc<FileKeys<A>>,
    object: Arc<dyn RangeRead>,
}

impl<A: ChunkAead> std::ops::Deref for OpenedFile<A> {
    type Target = FileKeys<A>;

    fn deref(&self) -> &FileKeys<A> {
        &self.keys
    }
}

impl<A: ChunkAead> OpenedFile<A> {
    /// The keys and head, to read through another opening of the same object later
    /// ([`FileKeys::attach`]), and the object (closed when its last holder drops it).
    pub fn detach(self) -> (Arc<FileKeys<A>>, Arc<dyn RangeRead>) {
        (self.keys, self.object)
    }

    /// Reads and authenticates chunk `i` into `buf` (its exact plaintext length).
    pub fn read_chunk(&self, i: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let l = self.codec.layout();
        let (s, _) = l.chunk_range(i);
        self.object
            .read_exact_at(buf, l.data_offset + s)
            .map_err(|e| StoreError::io("reading", &self.path, e))?;
        self.codec
            .open_chunk(i, buf, &self.head.tags[i as usize])
            .map_err(|e| StoreError::Format {
                what: self.what.clone(),
                source: e,
            })
    }

    /// Authenticates every chunk without writing plaintext anywhere. Reads the ciphertext
    /// through [`RangeRead::view`] (short-lived maps of a local file; see `store::mapped` for
    /// why only here).
    pub fn verify(&self, threads: usize, progress: &dyn Progress) -> Result<(), StoreError> {
        let l = *self.codec.layout();
        for_each_chunk(&l, threads, |i, buf| {
            let (s, _) = l.chunk_range(i);
            let ct = self
                .object
                .view(l.data_offset + s, buf.len())
                .map_err(|e| StoreError::io("mapping", &self.path, e))?;
            self.codec
                .open_chunk_to(i, &ct, buf, &self.head.tags[i as usize])
                .map_err(|e| StoreError::Format {
                    what: self.what.clone(),
                    source: e,
                })?;
            progress.inc(buf.len() as u64);
            Ok(())
        })
    }

    /// Decrypts every chunk into `out` at `out_offset` + plaintext offset. Each chunk is
    /// authenticated before any of its bytes are written.
    pub fn decrypt_into(
        &self,
        out: &File,
        out_path: &Path,
        out_offset: u64,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<(), StoreError> {
        let layout = *self.codec.layout();
        with_writeback(out, |written| {
            pipeline_chunks(
                &layout,
                producers(threads),
                |i, buf| self.read_chunk(i, buf),
                |i, buf| {
                    let (s, _) = layout.chunk_range(i);
                    out.write_all_at(buf, out_offset + s)
                        .map_err(|e| StoreError::io("writing", out_path, e))?;
                    written.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    progress.inc(buf.len() as u64);
                    crate::interrupt::check().map_err(StoreError::Interrupted)?;
                    Ok(())
                },
            )
        })
    }

    /// Decrypts plaintext bytes `[start, end)`, reading only the chunks that cover them.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
        let l = *self.codec.layout();
        if start > end || end > l.plaintext_len {
            return Err(StoreError::Format {
                what: self.what.clone(),
                source: FormatError::RangeOutOfBounds {
                    start,
                    end,
                    len: l.plaintext_len,
                },
            });
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut buf = zeroize::Zeroizing::new(vec![0u8; l.chunk_size as usize]);
        for i in l.chunks_covering(start, end) {
            let (cs, ce) = l.chunk_range(i);
            let b = &mut buf[..(ce - cs) as usize];
            self.read_chunk(i, b)?;
            let from = start.max(cs) - cs;
            let to = end.min(ce) - cs;
            out.extend_from_slice(&b[from as usize..to as usize]);
        }
        Ok(out)
    }

    /// Streams plaintext bytes `[start, end)` to `out` at `out_offset`, one chunk at a time.
    pub fn copy_range_into(
        &self,
        start: u64,
        end: u64,
        out: &File,
        out_path: &Path,
        out_offset: u64,
    ) -> Result<(), StoreError> {
        let l = *self.codec.layout();
        let step = u64::from(l.chunk_size);
        let mut pos = start;
        while pos < end {
            let stop = (pos - pos % step + step).min(end);
            let bytes = zeroize::Zeroizing::new(self.read_range(pos, stop)?);
            out.write_all_at(&bytes, out_offset + pos - start)
                .map_err(|e| StoreError::io("writing", out_path, e))?;
            pos = stop;
            crate::interrupt::check().map_err(StoreError::Interrupted)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(chunks: u64) -> Layout {
        Layout::new(100, 16, chunks * 16).unwrap()
    }

    #[test]
    fn pipeline_visits_every_chunk_once() {
        for producers in [1, 2, 5] {
            let l = layout(1000);
            let mut seen = vec![0u32; 1000];
            pipeline_chunks(
                &l,
                producers,
                |i, buf| {
                    buf.fill(i as u8);
                    Ok::<_, u64>(())
                },
                |i, buf| {
                    assert!(buf.iter().all(|&b| b == i as u8));
                    seen[i as usize] += 1;
                    Ok(())
                },
            )
            .unwrap();
            assert!(seen.iter().all(|&n| n == 1));
        }
    }

    #[test]
    fn pipeline_stops_on_a_failing_writer_or_producer() {
        for producers in [1, 3] {
            let l = layout(500);
            let r = pipeline_chunks(
                &l,
                producers,
                |_, _| Ok::<_, u64>(()),
                |i, _| {
                    if i >= 7 {
                        Err(i)
                    } else {
                        Ok(())
                    }
                },
            );
            assert!(r.unwrap_err() >= 7);
            let r = pipeline_chunks(
                &l,
                producers,
                |i, _| if i == 42 { Err(i) } else { Ok(()) },
                |_, _| Ok(()),
            );
            assert_eq!(r.unwrap_err(), 42);
        }
    }
}
