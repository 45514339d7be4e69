//! KEK lifecycle over a vault: which objects depend on which KEK version, rewrapping every
//! data key under the newest version (only key slots change, never ciphertext), and retiring a
//! version once nothing depends on it.

use super::object::{ObjectRef, RevisionState};
use super::sealed::SealedFile;
use super::{RecordError, RevisionRef, StoreError, Vault};
use crate::format::{KEY_SLOTS, KEY_SLOT_LEN};
use crate::hsm::{KeyWrap, Pkcs11KeyWrap};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `rewrap` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RewrapReport {
    /// Objects (sealed files and the watermark key) rewrapped, by the version they left.
    pub rewrapped_from: BTreeMap<u32, u64>,
    /// Objects already under the newest version.
    pub current: u64,
    /// The newest version.
    pub newest: u32,
}

/// The objects whose key currently opens under each KEK version.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KekUse {
    /// Version → objects (paths relative to the vault).
    pub by_version: BTreeMap<u32, Vec<String>>,
    /// Versions on the token.
    pub on_token: Vec<u32>,
}

impl Vault {
    /// Every sealed object of the vault (manifests and files), or of one model or revision.
    /// Revisions are the sealed ones (`revisions`: a staging directory of an unfinished seal
    /// is not one); inside a revision every sealed file counts, hidden names included (a
    /// checkpoint's `.gitattributes` is sealed like any other file).
    pub fn sealed_objects(&self, only: Option<&RevisionRef>) -> Result<Vec<ObjectRef>, StoreError> {
        let revs: Vec<(String, String)> = match only {
            Some(r) => match &r.revision {
                Some(rev) => vec![(r.model.clone(), rev.clone())],
                None => self
                    .revisions(&r.model)?
                    .into_iter()
                    .map(|rev| (r.model.clone(), rev))
                    .collect(),
            },
            None => self
                .list()?
                .into_iter()
                .map(|l| (l.manifest.model, l.manifest.revision))
                .collect(),
        };
        let store = self.sealed_store();
        let mut out = Vec::new();
        for (model, rev) in revs {
            if store.state(&model, &rev)? != RevisionState::Sealed {
                return Err(StoreError::NotFound(format!(
                    "no revision {model}@{rev} in this vault"
                )));
            }
            if let Some(t) = store.shredded(&model, &rev)? {
                if only.is_some_and(|r| r.revision.is_some()) {
                    return Err(StoreError::Shredded(format!("{model}@{rev}"), t));
                }
                continue; // nothing left to rewrap or to depend on a KEK
            }
            out.extend(store.objects(&model, &rev)?);
        }
        out.sort_by_key(ObjectRef::label);
        Ok(out)
    }

    /// Opens a sealed object through the store and parses its head.
    fn sealed_object(&self, o: &ObjectRef) -> Result<SealedFile, StoreError> {
        let (obj, name) = self.sealed_store().open(&o.model, &o.rev, o.name())?;
        SealedFile::from_object(name.into(), obj)
    }

    /// Writes key slots of an object through the store.
    fn write_slots(&self, o: &ObjectRef, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.sealed_store().write_key_slots(o, offset, bytes)
    }

    pub(super) fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.dir).unwrap_or(p).display().to_string()
    }

    /// Rewraps the data key of every sealed file (of `only`, or of the whole vault together
    /// with the watermark key) under the newest KEK version. Ciphertext, headers and tag tables
    /// are not touched; each file's new key slot is written and synced before the next file,
    /// and its old slot stays valid until then, so an interrupted rewrap leaves every object
    /// openable and a rerun finishes the job. `progress(done, total)` is called per object.
    pub fn rewrap(
        &self,
        kw: &Pkcs11KeyWrap,
        only: Option<&RevisionRef>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<RewrapReport, StoreError> {
        let newest = *kw
            .refresh()
            .map_err(|e| StoreError::Hsm {
                what: "HSM".into(),
                source: e,
            })?
            .last()
            .expect("a token with no KEK fails to open");
        let files = self.sealed_objects(only)?;
        let with_wm = only.is_none() && self.watermark_key_path().exists();
        let total = files.len() + usize::from(with_wm);
        let mut rep = RewrapReport {
            newest,
            ..Default::default()
        };
        for (i, o) in files.iter().enumerate() {
            let what = o.label();
            let write = |offset, bytes: &[u8]| self.write_slots(o, offset, bytes);
            match self.sealed_object(o)?.rewrap(kw, &what, &write)? {
                Some((old, _)) => *rep.rewrapped_from.entry(old).or_default() += 1,
                None => rep.current += 1,
            }
            progress(i + 1, total);
        }
        if with_wm {
            let w = self.wrapped_watermark_key()?.expect("exists");
            let what = self.relative(&self.watermark_key_path());
            let hsm = |e| StoreError::Hsm {
                what: what.clone(),
                source: e,
            };
            if w.kek_version == newest && w.kek_label == kw.kek_label() {
                rep.current += 1;
            } else {
                let key = kw.unwrap(&w).map_err(hsm)?;
                let nw = kw.wrap(&key).map_err(hsm)?;
                self.replace_wrapped_watermark_key(&nw)?;
                *rep.rewrapped_from.entry(w.kek_version).or_default() += 1;
            }
            progress(total, total);
        }
        Ok(rep)
    }

    /// Which KEK version opens each object now (found by unwrapping, so a slot that no longer
    /// opens does not count), and the versions on the token.
    pub fn kek_use(&self, kw: &Pkcs11KeyWrap) -> Result<KekUse, StoreError> {
        let on_token = kw.refresh().map_err(|e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        })?;
        let mut by_version: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for o in self.sealed_objects(None)? {
            let what = o.label();
            let v = self.sealed_object(&o)?.opening_kek_version(kw, &what)?;
            by_version.entry(v).or_default().push(what);
        }
        if let Some(w) = self.wrapped_watermark_key()? {
            by_version
                .entry(w.kek_version)
                .or_default()
                .push(self.relative(&self.watermark_key_path()));
        }
        Ok(KekUse {
            by_version,
            on_token,
        })
    }

    /// Destroys KEK `version` on the token, refusing while any object still opens only under it
    /// (or while it is the newest); `record` runs once it is decided and before anything is
    /// destroyed, and its failure stops the retire.
    pub fn retire_kek(
        &self,
        kw: &Pkcs11KeyWrap,
        version: u32,
        record: impl FnOnce() -> Result<(), RecordError>,
    ) -> Result<(), StoreError> {
        let uses = self.kek_use(kw)?;
        if !uses.on_token.contains(&version) {
            return Err(StoreError::NotFound(format!(
                "KEK version {version} is not on the token (versions there: {})",
                list(&uses.on_token)
            )));
        }
        if let Some(objs) = uses.by_version.get(&version) {
            let shown: Vec<&str> = objs.iter().take(5).map(String::as_str).collect();
            return Err(StoreError::BadInput(format!(
                "KEK version {version} still opens {} object(s) ({}{}): run `weightvault rewrap` first",
                objs.len(),
                shown.join(", "),
                if objs.len() > 5 { ", ..." } else { "" }
            )));
        }
        if uses.on_token.last() == Some(&version) {
            return Err(StoreError::Hsm {
                what: format!("KEK version {version}"),
                source: crate::hsm::HsmError::NewestKek {
                    label: kw.kek_label().to_string(),
                    version,
                },
            });
        }
        // Recorded before anything is destroyed.
        record().map_err(StoreError::Unrecorded)?;
        kw.destroy_kek(version).map_err(|e| StoreError::Hsm {
            what: format!("KEK version {version}"),
            source: e,
        })
    }
}

/// What `shred` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShredReport {
    /// The revision.
    pub label: String,
    /// Sealed files whose key slots were destroyed.
    pub files: usize,
    /// The KEK version every other object was rewrapped to.
    pub rotated_to: u32,
    /// Objects rewrapped to it.
    pub rewrapped: u64,
    /// Older KEK versions destroyed, so that copies of the shredded files made before (backups)
    /// cannot be opened either.
    pub retired: Vec<u32>,
    /// Secret keys on the token tried against every wrapped data key the revision had.
    pub keys_tried: usize,
    /// Those that still unwrap one (must be empty).
    pub still_open: Vec<String>,
}

impl Vault {
    /// Crypto-shreds one revision: `record` is called first (the ledger entry; an error aborts
    /// before anything is destroyed); then the revision is marked shredded, every key slot of
    /// its files is overwritten with zeros and synced, a new KEK version is made, every other
    /// object rewrapped to it and every older version destroyed — so that no copy of the
    /// wrapped data keys (a backup of the vault included) can be opened by the HSM. Finally
    /// every secret key on the token is tried against every wrapped data key the revision had.
    /// Running it again after an interruption finishes the job.
    pub fn shred(
        &self,
        kw: &Pkcs11KeyWrap,
        r: &RevisionRef,
        record: impl FnOnce(&str, &[String]) -> Result<(), RecordError>,
    ) -> Result<ShredReport, StoreError> {
        let (label, _) = self.named_revision(r, "shred")?;
        let (model, rev) = label.split_once('@').expect("MODEL@REV");
        let store = self.sealed_store();
        let files = store.objects(model, rev)?;
        let mut wrapped = Vec::new();
        for o in &files {
            let sf = self.sealed_object(o)?;
            wrapped.extend(sf.head.slots.iter().flatten().map(|s| s.wrapped.clone()));
        }
        let names: Vec<String> = files.iter().map(ObjectRef::label).collect();
        record(&label, &names).map_err(StoreError::Unrecorded)?;
        // The mark first, so that anyone opening meanwhile is told plainly.
        let mark = serde_json::json!({"time": super::now_rfc3339(), "files": names});
        store.mark_shredded(model, rev, mark.to_string().as_bytes())?;
        let zeros = [0u8; KEY_SLOT_LEN * KEY_SLOTS];
        // Opened again rather than held open: a revision may have more files than descriptors.
        for o in &files {
            let at = self.sealed_object(o)?.key_slot_offset(0);
            self.write_slots(o, at, &zeros)?;
        }
        let hsm = |e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        };
        let rotated_to = kw.rotate().map_err(hsm)?;
        let rw = self.rewrap(kw, None, &|_, _| {})?;
        let mut retired = Vec::new();
        let uses = self.kek_use(kw)?;
        for v in uses.on_token.iter().filter(|v| **v < rotated_to) {
            if !uses.by_version.contains_key(v) {
                kw.destroy_kek(*v).map_err(hsm)?;
                retired.push(*v);
            }
        }
        let mut keys_tried = 0;
        let mut still_open = Vec::new();
        for w in &wrapped {
            let (n, opened) = kw.keys_that_unwrap(w).map_err(hsm)?;
            keys_tried = n;
            still_open.extend(opened);
        }
        Ok(ShredReport {
            label,
            files: files.len(),
            rotated_to,
            rewrapped: rw.rewrapped_from.values().sum(),
            retired,
            keys_tried,
            still_open,
        })
    }
}

pub(super) fn walk_sealed(d: &Path, out: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for e in std::fs::read_dir(d).map_err(|e| StoreError::io("listing", d, e))? {
        let p = e.map_err(|e| StoreError::io("listing", d, e))?.path();
        if p.is_dir() {
            walk_sealed(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "sealed") {
            out.push(p);
        }
    }
    Ok(())
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
