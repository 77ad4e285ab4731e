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

    /// Opens a large entry file without reading it whole: `each` gets
    /// every entry's payload offset, length and first `prefix` bytes (fewer
    /// when the payload is shorter), in order. Only the last entry is read
    /// whole and checked (its checksum and `check_last`): every entry
    /// before it was synced before it was written. A torn last entry, or
    /// one `each` refuses, is cut off with the rest.
    pub fn scan(
        path: PathBuf,
        max_payload: usize,
        prefix: usize,
        what: &str,
        mut each: impl FnMut(u64, usize, &[u8]) -> bool,
        check_last: impl FnOnce(&[u8]) -> bool,
    ) -> Result<FramedFile, StorageError> {
        use std::os::unix::fs::FileExt;
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FramedFile {
                    path,
                    file: None,
                    bytes: 0,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let size = f.metadata()?.len();
        // (payload offset, length, prefix) of the entries that fit.
        let mut entries: Vec<(u64, usize, Vec<u8>)> = Vec::new();
        let mut pos = 0u64;
        let mut head = [0u8; 4];
        while pos + 8 <= size {
            f.read_exact_at(&mut head, pos)?;
            let len = u32::from_le_bytes(head) as usize;
            if len > max_payload || pos + 8 + len as u64 > size {
                break;
            }
            let mut first = vec![0u8; prefix.min(len)];
            f.read_exact_at(&mut first, pos + 4)?;
            entries.push((pos + 4, len, first));
            pos += 8 + len as u64;
        }
        if let Some((at, len, _)) = entries.last() {
            let mut entry = vec![0u8; len + 4];
            f.read_exact_at(&mut entry, *at)?;
            let (payload, crc) = entry.split_at(*len);
            if crc32fast::hash(payload).to_le_bytes() != crc || !check_last(payload) {
                entries.pop();
            }
        }
        let mut whole = 0u64;
        for (at, len, first) in &entries {
            if !each(*at, *len, first) {
                break;
            }
            whole = at + *len as u64 + 4;
        }
        drop(f);
        if whole < size {
            tracing::warn!(
                file = %path.display(),
                dropped = size - whole,
                "dropping the torn tail of a log {what} file"
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(whole)?;
            f.sync_all()?;
        }
        Ok(FramedFile {
            path,
            file: None,
            bytes: whole,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
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
