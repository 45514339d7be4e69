//! Looking for plaintext where it must not be: an index of a checkpoint's 64-byte windows and
//! a scan of every file under some directories for any of them, and a generated checkpoint
//! to look for.
//!
//! The index holds the windows chosen by their content (a gear hash over the 64 bytes, kept
//! when its top 6 bits are zero: one window in 64 on average), so the same windows are
//! chosen wherever the bytes sit in a scanned file, at any alignment. A leaked run of 4 KiB
//! contains a chosen window with probability 1 - (63/64)^4033 (all but 1e-27); every hit is
//! confirmed byte for byte against the original, so nothing is reported falsely.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const WINDOW: usize = 64;

fn gear() -> &'static [u64; 256] {
    static G: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let mut x = 0x243F_6A88_85A3_08D3u64;
        let mut g = [0u64; 256];
        for v in &mut g {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x;
        }
        g
    })
}

/// Calls `f(end, hash)` for every chosen window of `data` (`end` is one past its last byte),
/// continuing the rolling state `h` across calls (for files read in pieces).
#[inline(always)]
fn chosen(data: &[u8], h: &mut u64, seen: &mut u64, mut f: impl FnMut(usize, u64)) {
    let g = gear();
    let (mut x, mut i) = (*h, 0);
    // The first 63 bytes of a file only fill the window.
    while *seen + (i as u64) < WINDOW as u64 - 1 && i < data.len() {
        x = (x << 1).wrapping_add(g[data[i] as usize]);
        i += 1;
    }
    for (j, &b) in data.iter().enumerate().skip(i) {
        x = (x << 1).wrapping_add(g[b as usize]);
        if x >> 58 == 0 {
            f(j + 1, x);
        }
    }
    *seen += data.len() as u64;
    *h = x;
}

/// The chosen windows of some plaintext files.
pub struct PlainIndex {
    files: Vec<PathBuf>,
    at: HashMap<u64, (u32, u64)>,
}

/// A window of plaintext found in a file.
#[derive(Debug)]
pub struct Leak {
    /// The file it was found in.
    pub path: PathBuf,
    /// Where in that file.
    pub offset: u64,
    /// The plaintext file and offset it matches.
    pub of: (PathBuf, u64),
}

fn read_all(path: &Path, mut each: impl FnMut(&[u8])) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        each(&buf[..n]);
    }
}

impl PlainIndex {
    /// Indexes every file under `root`.
    pub fn build(root: &Path) -> Self {
        let files = super::files_under(root);
        let mut at = HashMap::new();
        for (k, p) in files.iter().enumerate() {
            // A safetensors header is kept in clear in its sealed file on purpose
            // (docs/FORMAT.md): only what follows it is looked for.
            let skip = if p.extension().is_some_and(|e| e == "safetensors") {
                let mut n = [0u8; 8];
                std::fs::File::open(p)
                    .unwrap()
                    .read_exact_at(&mut n, 0)
                    .unwrap();
                8 + u64::from_le_bytes(n)
            } else {
                0
            };
            let (mut h, mut seen, mut base) = (0u64, 0u64, 0u64);
            read_all(p, |b| {
                chosen(b, &mut h, &mut seen, |end, hash| {
                    let start = base + end as u64 - WINDOW as u64;
                    if start >= skip {
                        at.entry(hash).or_insert((k as u32, start));
                    }
                });
                base += b.len() as u64;
            });
        }
        PlainIndex { files, at }
    }

    /// Number of windows indexed.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Every window of the plaintext found in files under `dirs`, except files under `skip`.
    /// Large files are scanned in parts on every core (each part starting 63 bytes early).
    pub fn scan(&self, dirs: &[&Path], skip: &[&Path]) -> Vec<Leak> {
        let mut leaks = Vec::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        for d in dirs {
            for p in super::files_under(d) {
                if skip.iter().any(|s| p.starts_with(s)) {
                    continue;
                }
                // A file may vanish while it is read (a sweep): skip it then.
                let Ok(len) = std::fs::metadata(&p).map(|m| m.len()) else {
                    continue;
                };
                let parts = if len < 64 << 20 { 1 } else { cores };
                let step = len.div_ceil(parts).max(1);
                let hits: Vec<(u64, u32, u64)> = std::thread::scope(|sc| {
                    let handles: Vec<_> = (0..parts)
                        .map(|k| {
                            let p = &p;
                            sc.spawn(move || {
                                let from = (k * step).saturating_sub(WINDOW as u64 - 1);
                                self.scan_range(p, from, ((k + 1) * step).min(len))
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| h.join().unwrap())
                        .collect()
                });
                if let Some(&(offset, k, off)) = hits
                    .iter()
                    .find(|(offset, k, off)| self.confirm(&p, *offset, *k, *off))
                {
                    leaks.push(Leak {
                        path: p.clone(),
                        offset,
                        of: (self.files[k as usize].clone(), off),
                    });
                }
            }
        }
        leaks
    }

    /// Candidate windows of the plaintext starting in `[from, to)` of `path`... that end by
    /// `to` (the next part covers those that end later).
    fn scan_range(&self, path: &Path, from: u64, to: u64) -> Vec<(u64, u32, u64)> {
        let Ok(f) = std::fs::File::open(path) else {
            return vec![];
        };
        let (mut h, mut seen, mut base) = (0u64, 0u64, from);
        let mut hits = Vec::new();
        let mut buf = vec![0u8; 4 << 20];
        while base < to {
            let want = buf.len().min((to - base) as usize);
            let n = match f.read_at(&mut buf[..want], base) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            chosen(&buf[..n], &mut h, &mut seen, |end, hash| {
                if let Some(&(k, off)) = self.at.get(&hash) {
                    hits.push((base + end as u64 - WINDOW as u64, k, off));
                }
            });
            base += n as u64;
        }
        hits
    }

    fn confirm(&self, path: &Path, offset: u64, k: u32, off: u64) -> bool {
        let (mut a, mut b) = ([0u8; WINDOW], [0u8; WINDOW]);
        let ok_a = std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut a, offset));
        let ok_b =
            std::fs::File::open(&self.files[k as usize]).and_then(|f| f.read_exact_at(&mut b, off));
        ok_a.is_ok() && ok_b.is_ok() && a == b
    }
}

/// Writes a generated checkpoint of about `mib` MiB in two shards (I32 tensors, which the
/// watermark leaves alone, so a released copy equals the original byte for byte), an index
/// and a config file. Pseudo-random contents, so every 64-byte window is unique.
pub fn big_checkpoint(dir: &Path, mib: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let per_shard = mib << 19; // half, in bytes
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut weight_map = serde_json::Map::new();
    for s in 0..2 {
        let name = format!("model-0000{}-of-00002.safetensors", s + 1);
        let tensors = 4;
        let each = per_shard / tensors / 4096 * 4096;
        let mut data = vec![0u8; each * tensors];
        for w in data.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let names: Vec<String> = (0..tensors).map(|t| format!("layers.{s}.{t}.w")).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = names
            .iter()
            .enumerate()
            .map(|(t, n)| {
                weight_map.insert(n.clone(), name.clone().into());
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::I32,
                        vec![each / 4096, 1024],
                        &data[t * each..(t + 1) * each],
                    )
                    .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&name)).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "generated"}"#).unwrap();
}

/// A small deterministic random source for kill times (seed printed by the caller).
pub struct Lcg(pub u64);

impl Lcg {
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What [`interrupt_rounds`] saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Stopped by SIGINT or SIGTERM (exit 130 / 143, one line).
    pub caught: usize,
    /// Stopped by SIGKILL.
    pub killed: usize,
    /// Finished before the signal (or were stopped after naming a whole output).
    pub finished: usize,
    /// Of those, stopped by the signal after the output was named.
    pub after_kill: usize,
    /// Time spent scanning for plaintext.
    pub scanning: std::time::Duration,
}

/// Runs `command` (a command writing `out`) again and again, each time sending SIGINT, SIGTERM
/// or SIGKILL at a random moment within `took`, until 20 of each landed before the command
/// ended. After each: the shell's exit code and a one-line message for SIGINT/SIGTERM, no
/// `out` unless whole (equal to `want` by SHA-256), and no plaintext in `scan` before the next
/// run can sweep it. `finished(stdout)` is called with each run that completed. A run that
/// finished first makes the window shorter (the page cache warms up).
pub fn interrupt_rounds(
    took: std::time::Duration,
    mut command: impl FnMut() -> std::process::Command,
    out: &Path,
    want: &std::collections::BTreeMap<String, String>,
    index: &PlainIndex,
    scan: &[&Path],
    mut finished: impl FnMut(&[u8]),
) -> Tally {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("one whole run took {took:?}; kill times from seed {seed}");
    let mut rng = Lcg(seed);
    let mut window = took;
    let mut landed = [0usize; 3];
    let mut t = Tally::default();
    for attempt in 0.. {
        assert!(attempt < 300, "could not interrupt 20 of each: {landed:?}");
        let Some(k) = (0..3).map(|i| (attempt + i) % 3).find(|&k| landed[k] < 20) else {
            break;
        };
        let sig = ["INT", "TERM", "KILL"][k];
        // Not before 50 ms: a signal that arrives before the command has started (exec,
        // loading, installing its handlers) does not interrupt its work, it prevents it.
        let at = window
            .mul_f64(0.02 + 0.96 * rng.next_f64())
            .max(std::time::Duration::from_millis(50));
        let child = command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        super::signal(child.id(), sig);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || out.exists() {
            // Finished first, or stopped after the output was named: whole.
            t.finished += 1;
            if o.status.success() {
                finished(&o.stdout);
            } else {
                t.after_kill += 1;
            }
            window = window.mul_f64(0.85);
            assert_eq!(&super::tree_hashes(out), want, "SIG{sig} at {at:?}");
            std::fs::remove_dir_all(out).unwrap();
            continue;
        }
        if sig == "KILL" {
            assert_eq!(o.status.signal(), Some(9), "{err}");
            t.killed += 1;
        } else {
            let code = if sig == "INT" { 130 } else { 143 };
            assert_eq!(o.status.code(), Some(code), "SIG{sig} at {at:?}: {err}");
            assert!(
                err.trim_end().lines().count() == 1
                    && err.contains(&format!("interrupted by SIG{sig}")),
                "SIG{sig}: {err}"
            );
            t.caught += 1;
        }
        landed[k] += 1;
        let s = std::time::Instant::now();
        let leaks = index.scan(scan, &[]);
        t.scanning += s.elapsed();
        assert!(
            leaks.is_empty(),
            "SIG{sig} at {at:?}: plaintext left: {leaks:?}"
        );
    }
    println!(
        "{} stopped by SIGINT/SIGTERM, {} by SIGKILL, {} finished first ({} of those after the signal); scanning took {:?} in all",
        t.caught, t.killed, t.finished, t.after_kill, t.scanning
    );
    t
}
