//! Plaintext written to a stream instead of a file (`open --out -`): one tensor as a
//! single-tensor safetensors file, or a byte range of one file, chunk by chunk, each chunk
//! authenticated before any of its bytes is written.

use super::revision::interrupted;
use super::*;
use std::io::Write;

impl OpenedRevision {
    /// Writes tensor `name` as a single-tensor safetensors file to `out`: the bytes `open
    /// --tensor NAME --out FILE` writes. Returns the bytes written.
    pub fn write_tensor(&self, name: &str, out: &mut dyn Write) -> Result<u64, StoreError> {
        let super::revision::SingleTensor {
            file: i,
            head,
            data: (s, e),
        } = self.single_tensor(name)?;
        let w = |e: std::io::Error| StoreError::io("writing", Path::new("standard output"), e);
        out.write_all(&head).map_err(w)?;
        self.copy_data(i, s as u64, e as u64, out)?;
        out.flush().map_err(w)?;
        Ok(head.len() as u64 + (e - s) as u64)
    }

    /// Writes bytes `[start, end)` of file `path` as it was sealed (its original bytes; all
    /// of it without a range) to `out`. Returns the bytes written.
    pub fn write_file_range(
        &self,
        path: &str,
        range: (Option<u64>, Option<u64>),
        out: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let Some(i) = self.files.iter().position(|(e, _)| e.path == path) else {
            return Err(StoreError::NotFound(format!(
                "{} has no file '{path}'{}",
                self.label,
                did_you_mean(path, self.files.iter().map(|(e, _)| e.path.as_str()))
            )));
        };
        let f = &self.files[i].1;
        let meta = &f.header().meta;
        let len = meta.len() as u64 + f.header().plaintext_len;
        let (start, end) = (range.0.unwrap_or(0), range.1.unwrap_or(len).min(len));
        if start > end || start > len {
            return Err(StoreError::BadInput(format!(
                "--range {start}:{end} is outside {path} ({len} bytes)"
            )));
        }
        let w = |e: std::io::Error| StoreError::io("writing", Path::new("standard output"), e);
        let m = meta.len() as u64;
        if start < m {
            out.write_all(&meta[start as usize..end.min(m) as usize])
                .map_err(w)?;
        }
        if end > m {
            self.copy_data(i, start.max(m) - m, end - m, out)?;
        }
        out.flush().map_err(w)?;
        Ok(end - start)
    }

    /// Writes plaintext bytes `[start, end)` of file `i`'s data to `out`, one chunk at a time.
    fn copy_data(
        &self,
        i: usize,
        start: u64,
        end: u64,
        out: &mut dyn Write,
    ) -> Result<(), StoreError> {
        let f = &self.files[i].1;
        let step = u64::from(f.header().chunk_size);
        let mut pos = start;
        while pos < end {
            let stop = (pos - pos % step + step).min(end);
            let bytes = zeroize::Zeroizing::new(f.read_range(pos, stop)?);
            out.write_all(&bytes)
                .map_err(|e| StoreError::io("writing", Path::new("standard output"), e))?;
            pos = stop;
            interrupted()?;
        }
        Ok(())
    }
}
