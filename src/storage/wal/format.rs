//! On-disk encoding: segment file names, record framing, and the scanner
//! used when a WAL is opened.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::WalError;

/// Bytes in a record header: `len: u32`, `crc: u32`, `seq: u64`, little endian.
pub(super) const HEADER_LEN: usize = 16;
/// File name extension of segment files.
const SEGMENT_SUFFIX: &str = ".wal";
/// Width of the zero-padded decimal sequence number in a segment name.
const NAME_DIGITS: usize = 20;
/// Read buffer size used while scanning a segment.
const SCAN_BUFFER: usize = 1 << 20;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// The replay callback with its error type erased.
pub(super) type ReplayFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), BoxError> + 'a;

/// `00000000000000000042.wal` for a segment whose first record is seq 42.
pub(super) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:0width$}{SEGMENT_SUFFIX}", width = NAME_DIGITS)
}

/// Inverse of [`segment_file_name`]; `None` for any other file name.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// CRC32 (IEEE) over the little-endian sequence number followed by the payload.
pub(super) fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one framed record to `buf`. The caller guarantees
/// `payload.len() <= u32::MAX` (checked in `Wal::append`).
pub(super) fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(u32::try_from(payload.len()).is_ok());
    let len = payload.len() as u32;
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Where and why a segment stops being readable.
#[derive(Debug)]
pub(super) struct Defect {
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// Result of scanning one segment.
#[derive(Debug)]
pub(super) struct Scan {
    /// The sequence number the next record would carry.
    pub(super) next_seq: u64,
    /// Length of the intact prefix of the file (a record boundary).
    pub(super) good_len: u64,
    /// Length of the file as found.
    pub(super) file_len: u64,
    /// The first bad record, if the file does not end cleanly.
    pub(super) defect: Option<Defect>,
}

/// Reads every record of the segment at `path`, whose first record must be
/// `first_seq`, calling `replay` for each intact one in order. Stops at the
/// first damaged record and reports it in [`Scan::defect`]; whether that is a
/// repairable torn tail or an error is for the caller to decide.
pub(super) fn scan_segment(
    path: &Path,
    first_seq: u64,
    replay: &mut ReplayFn<'_>,
) -> Result<Scan, WalError> {
    let file = File::open(path).map_err(|e| WalError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| WalError::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut offset = 0u64;
    let mut expected = first_seq;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();

    let defect = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < HEADER_LEN as u64 {
            break Some(format!(
                "partial record header ({remaining} of {HEADER_LEN} bytes)"
            ));
        }
        reader
            .read_exact(&mut header)
            .map_err(|e| WalError::io(path, e))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&header[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        let available = remaining - HEADER_LEN as u64;
        if u64::from(len) > available {
            break Some(format!(
                "short payload ({available} of {len} bytes present)"
            ));
        }
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| WalError::io(path, e))?;
        if record_crc(seq, &payload) != crc {
            break Some("crc mismatch".to_string());
        }
        if seq != expected {
            break Some(format!("expected seq {expected}, found {seq}"));
        }
        replay(seq, &payload).map_err(WalError::Replay)?;
        offset += HEADER_LEN as u64 + u64::from(len);
        expected += 1;
    };

    Ok(Scan {
        next_seq: expected,
        good_len: offset,
        file_len,
        defect: defect.map(|reason| Defect { offset, reason }),
    })
}
