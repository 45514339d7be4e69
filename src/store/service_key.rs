//! The vault's service key (`watermark.key`): made on first use, kept only wrapped by the
//! KEK; the watermark's codes and each release's stream secret derive from it.

use super::*;

/// `watermark.key` as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWrappedKey {
    kek_label: String,
    kek_version: u32,
    wrapped: String,
}

impl Vault {
    /// The watermark key: made on first use, kept only wrapped by the KEK in
    /// `<vault>/watermark.key` (JSON: KEK label, version, RFC 5649 wrapped bytes in hex).
    pub fn watermark_key(&self, kw: &dyn KeyWrap) -> Result<crate::keys::SymmetricKey, StoreError> {
        let path = self.watermark_key_path();
        let hsm = |e| StoreError::Hsm {
            what: path.display().to_string(),
            source: e,
        };
        if let Some(w) = self.wrapped_watermark_key()? {
            return kw.unwrap(&w).map_err(hsm);
        }
        let key = crate::keys::SymmetricKey::random()
            .map_err(|e| StoreError::BadInput(format!("randomness: {e}")))?;
        let w = kw.wrap(&key).map_err(hsm)?;
        let tmp = self.write_wrapped_watermark_tmp(&w)?;
        // Another process may have made it meanwhile: keep the first.
        if std::fs::hard_link(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return self.watermark_key(kw);
        }
        let _ = std::fs::remove_file(&tmp);
        sync_dir(&self.dir)?;
        Ok(key)
    }

    /// Where the wrapped watermark key is kept.
    pub fn watermark_key_path(&self) -> PathBuf {
        self.dir.join("watermark.key")
    }

    /// The wrapped watermark key, if the vault has one.
    pub fn wrapped_watermark_key(&self) -> Result<Option<crate::hsm::WrappedKey>, StoreError> {
        let path = self.watermark_key_path();
        let b = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        let st: StoredWrappedKey = serde_json::from_slice(&b).map_err(|e| {
            StoreError::Mismatch(format!(
                "{}: not a wrapped watermark key: {e}",
                path.display()
            ))
        })?;
        Ok(Some(crate::hsm::WrappedKey {
            kek_label: st.kek_label,
            kek_version: st.kek_version,
            wrapped: hex::decode(&st.wrapped)
                .map_err(|e| StoreError::Mismatch(format!("{}: {e}", path.display())))?,
        }))
    }

    /// Writes a wrapped watermark key to a fresh, synced temporary file in the vault; returns
    /// its path (the caller links or renames it into place).
    pub(crate) fn write_wrapped_watermark_tmp(
        &self,
        w: &crate::hsm::WrappedKey,
    ) -> Result<PathBuf, StoreError> {
        let text = serde_json::to_vec_pretty(&StoredWrappedKey {
            kek_label: w.kek_label.clone(),
            kek_version: w.kek_version,
            wrapped: hex::encode(&w.wrapped),
        })
        .expect("json");
        let tmp = self.dir.join(format!(".watermark.key.{}", random_hex(6)));
        write_synced(&tmp, &text)?;
        Ok(tmp)
    }

    /// Replaces the wrapped watermark key atomically (rename, then the directory synced).
    pub(crate) fn replace_wrapped_watermark_key(
        &self,
        w: &crate::hsm::WrappedKey,
    ) -> Result<(), StoreError> {
        let tmp = self.write_wrapped_watermark_tmp(w)?;
        let path = self.watermark_key_path();
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("replacing", &path, e))?;
        sync_dir(&self.dir)
    }
}
