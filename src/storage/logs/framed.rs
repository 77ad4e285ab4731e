//! An append-only file of checksummed entries, the format of a partition's
//! side files (block filters, body templates): `u32 len | payload |
//! u32 crc32(payload)`, little endian. Each append is synced before it
//! returns. A torn tail (a crash while appending) fails its length or
//! checksum; on open it and everything after it are cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::storage::StorageError;

/// An open entry file: where it is and how many bytes of it are whole.
#[derive(Debug)]
pub struct FramedFile {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
}

/// Appends one entry holding `payload` to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
}

impl FramedFile {
    /// Reads the file at `path` (missing: empty), handing each whole entry's
    /// payload to `take` in order. The first entry that is torn, claims
    /// more than `max_payload` bytes, fails its checksum or that `take`
    /// refuses ends the file: it and the rest are cut off (`what` names the
    /// file in the warning).
    pub fn open(
        path: PathBuf,
        max_payload: usize,
        what: &str,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Result<FramedFile, StorageError> {
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut pos = 0;
        while let Some(head) = data.get(pos..pos + 4) {
            let len = u32::from_le_bytes(head.try_into().unwrap_or([0; 4])) as usize;
            if len > max_payload {
                break;
            }
            let Some(entry) = data.get(pos + 4..pos + 8 + len) else {
                break;
            };
            let (payload, crc) = entry.split_at(len);
            if crc32fast::hash(payload).to_le_bytes() != crc || !take(payload) {
                break;
            }
            pos += 8 + len;
        }
        if pos < data.len() {
            tracing::warn!(
                file = %path.display(),
                dropped = data.len() - pos,
                "dropping the torn tail of a log {what} file"
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(pos as u64)?;
            f.sync_all()?;
        }
        Ok(FramedFile {
            path,
            file: None,
            bytes: pos as u64,
        })
    }

    /// Appends whole entries (made with [`frame`]) and syncs them. On an
    /// error the file is cut back to its last whole entry.
    pub fn append(&mut self, entries: &[u8]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write(entries) {
            if let Some(f) = self.file.take() {
                // Best effort: a later append must not follow a torn entry
                // (open would drop everything after it).
                let _ = f.set_len(self.bytes);
            }
            return Err(e);
        }
        self.bytes += entries.len() as u64;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        if self.file.is_none() {
            let created = !self.path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if created {
                if let Some(dir) = self.path.parent() {
                    File::open(dir)?.sync_all()?;
                }
            }
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(buf)?;
            f.sync_data()?;
        }
        Ok(())
    }

    /// Bytes of the whole entries.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
