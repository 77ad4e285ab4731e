//! Block Bloom filters for high-cardinality body words.
//!
//! Words with a digit and at least [`MIN_BLOCK_WORD_BYTES`] bytes (ids,
//! request ids, hashes, long numbers: see [`is_block_word`]) are mostly
//! unique, so a per-record posting list and a term dictionary entry for each
//! of them cost more than the rest of the index together. The store keeps
//! them out of the positional index. Records are written in blocks of up to
//! [`BLOCK_RECORDS`] consecutive records of a partition (a block also ends
//! at every commit), and each record carries its block number in an indexed
//! field. A block word that occurs in one record of its block goes to the
//! block's Bloom filter; one that repeats within the block, or occurred in
//! one of the few blocks before, goes to a plain posting list (no
//! positions), which is cheap for repeated words and keeps common words
//! (durations, dates) from making every block a candidate. A
//! search for a block word reads that posting list plus the records of the
//! blocks whose filter may hold the word, and checks each against its
//! stored body, so answers stay exact.
//!
//! File format (`blooms` in a partition directory): an append-only entry
//! file ([`super::framed`]), one filter per entry, the payload being
//! `u64 block | u8 probes | u64 words…` (little endian); a torn tail is
//! dropped on open. Entries are appended and synced before the
//! index commit that makes their records searchable, so every committed
//! record is covered; an entry whose records were never committed only adds
//! candidates.

use std::path::Path;

use super::framed::{frame, FramedFile};
use crate::storage::StorageError;

/// File name of a partition's filters.
pub const FILE: &str = "blooms";
/// Shortest word (in bytes) kept in block filters rather than postings.
pub const MIN_BLOCK_WORD_BYTES: usize = 5;
/// Most records one filter covers.
pub const BLOCK_RECORDS: usize = 4096;
/// Filter bits per distinct word (about 1 % false positives with 7 probes).
const BITS_PER_WORD: usize = 10;
const PROBES: u8 = 7;
/// Largest payload an entry may claim (guards against a damaged length).
const MAX_PAYLOAD: usize = 64 << 20;

/// Whether a (lower-case) body word is indexed by block filters instead of
/// postings: at least [`MIN_BLOCK_WORD_BYTES`] bytes with an ASCII digit.
pub fn is_block_word(w: &str) -> bool {
    w.len() >= MIN_BLOCK_WORD_BYTES && w.bytes().any(|b| b.is_ascii_digit())
}

/// The filter hash of a word: 64-bit FNV-1a with a final avalanche, fixed
/// forever (it is on disk).
pub fn word_hash(w: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in w.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix(h)
}

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The bit positions of a hash in a filter of `bits` bits.
fn probes(h: u64, k: u8, bits: u64) -> impl Iterator<Item = u64> {
    let h2 = fmix(h ^ 0x9e37_79b9_7f4a_7c15) | 1;
    (0..k as u64).map(move |i| {
        let x = h.wrapping_add(i.wrapping_mul(h2));
        ((x as u128 * bits as u128) >> 64) as u64
    })
}

/// The filter of one block of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFilter {
    /// The block number (unique in its partition).
    pub block: u64,
    k: u8,
    words: Vec<u64>,
}

impl BlockFilter {
    /// Whether a word with this hash may occur in the block.
    pub fn may_contain(&self, h: u64) -> bool {
        let bits = self.words.len() as u64 * 64;
        bits > 0
            && probes(h, self.k, bits).all(|b| self.words[(b / 64) as usize] >> (b % 64) & 1 == 1)
    }

    /// Bytes the filter takes on disk.
    pub fn encoded_len(&self) -> usize {
        4 + 9 + self.words.len() * 8 + 4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(9 + self.words.len() * 8);
        payload.extend_from_slice(&self.block.to_le_bytes());
        payload.push(self.k);
        for w in &self.words {
            payload.extend_from_slice(&w.to_le_bytes());
        }
        frame(&payload, out);
    }

    fn decode(payload: &[u8]) -> Option<BlockFilter> {
        if payload.len() < 9 || !(payload.len() - 9).is_multiple_of(8) {
            return None;
        }
        let k = payload[8];
        if k == 0 || k > 32 {
            return None;
        }
        Some(BlockFilter {
            block: u64::from_le_bytes(payload[..8].try_into().ok()?),
            k,
            words: payload[9..]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        })
    }
}

/// Blocks before the current one whose words count as seen: a word in one
/// of them goes to the posting list even when it occurs once in this block.
const RECENT_BLOCKS: usize = 4;

/// Counts the block words of the block being written.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    block: u64,
    records: usize,
    /// Per word hash, the records of the block holding it.
    counts: std::collections::HashMap<u64, u32>,
    /// The words of the last [`RECENT_BLOCKS`] blocks.
    recent: std::collections::VecDeque<std::collections::HashSet<u64>>,
}

/// A finished block: its filter (words in one record) and the words in
/// several records.
#[derive(Debug)]
pub struct FinishedBlock {
    pub filter: BlockFilter,
    pub repeated: std::collections::HashSet<u64>,
}

impl BlockBuilder {
    /// A builder whose first block is `block`.
    pub fn starting_at(block: u64) -> BlockBuilder {
        BlockBuilder {
            block,
            ..Default::default()
        }
    }

    /// The number of the block the next record joins.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Adds one record's block-word hashes (each distinct hash once).
    pub fn add(&mut self, hashes: impl IntoIterator<Item = u64>) {
        self.records += 1;
        for h in hashes {
            *self.counts.entry(h).or_default() += 1;
        }
    }

    /// Whether the block holds [`BLOCK_RECORDS`] records.
    pub fn is_full(&self) -> bool {
        self.records >= BLOCK_RECORDS
    }

    /// The block of the records added so far (none without records), and
    /// a fresh block.
    pub fn finish(&mut self) -> Option<FinishedBlock> {
        if self.records == 0 {
            return None;
        }
        let counts = std::mem::take(&mut self.counts);
        let seen = |h: &u64| self.recent.iter().any(|r| r.contains(h));
        let single = counts.iter().filter(|(h, c)| **c == 1 && !seen(h)).count();
        let bits = (single * BITS_PER_WORD).max(64).div_ceil(64) * 64;
        let mut words = vec![0u64; bits / 64];
        let mut repeated = std::collections::HashSet::new();
        for (h, c) in &counts {
            if *c > 1 || seen(h) {
                repeated.insert(*h);
                continue;
            }
            let h = *h;
            for b in probes(h, PROBES, bits as u64) {
                words[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        if self.recent.len() == RECENT_BLOCKS {
            self.recent.pop_front();
        }
        self.recent.push_back(counts.into_keys().collect());
        self.records = 0;
        self.block += 1;
        Some(FinishedBlock {
            filter: BlockFilter {
                block: self.block - 1,
                k: PROBES,
                words,
            },
            repeated,
        })
    }
}

/// A partition's filters: the file and the filters read from it or
/// appended since.
#[derive(Debug)]
pub struct FilterFile {
    file: FramedFile,
    filters: Vec<BlockFilter>,
}

impl FilterFile {
    /// Reads the filters of a partition directory, dropping a torn tail.
    pub fn open(dir: &Path) -> Result<FilterFile, StorageError> {
        let mut filters = Vec::new();
        let file = FramedFile::open(dir.join(FILE), MAX_PAYLOAD, "block filter", |p| {
            BlockFilter::decode(p).map(|f| filters.push(f)).is_some()
        })?;
        Ok(FilterFile { file, filters })
    }

    /// Appends filters and syncs them to disk. On an error the file is cut
    /// back to its last complete entry and nothing is added.
    pub fn append(&mut self, new: &[BlockFilter]) -> Result<(), StorageError> {
        let mut buf = Vec::with_capacity(new.iter().map(|f| f.encoded_len()).sum());
        for f in new {
            f.encode(&mut buf);
        }
        self.file.append(&buf)?;
        self.filters.extend_from_slice(new);
        Ok(())
    }

    /// The blocks whose filters may hold every hash.
    pub fn candidates(&self, hashes: &[u64]) -> Vec<u64> {
        self.filters
            .iter()
            .filter(|f| hashes.iter().all(|h| f.may_contain(*h)))
            .map(|f| f.block)
            .collect()
    }

    /// The number after the highest block in the file (0 when empty).
    pub fn next_block(&self) -> u64 {
        self.filters.iter().map(|f| f.block + 1).max().unwrap_or(0)
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        self.file.bytes()
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_words() {
        for w in ["12345", "ord12345", "0f3a9c2b7d1e4a66", "1234ms", "2024x"] {
            assert!(is_block_word(w), "{w}");
        }
        for w in ["1234", "connection", "v1", "abcdefgh", "8080", "error"] {
            assert!(!is_block_word(w), "{w}");
        }
    }

    #[test]
    fn filter_has_no_false_negatives_and_few_false_positives() {
        let mut b = BlockBuilder::starting_at(7);
        let words: Vec<String> = (0..3000).map(|i| format!("id{i:06}")).collect();
        for w in &words {
            b.add([word_hash(w), word_hash("common12345")]);
        }
        assert!(!b.is_full());
        let done = b.finish().unwrap();
        let f = done.filter;
        assert_eq!(f.block, 7);
        assert_eq!(b.block(), 8);
        // A word in several records is listed as repeated, not filtered.
        assert_eq!(
            done.repeated.into_iter().collect::<Vec<_>>(),
            vec![word_hash("common12345")]
        );
        assert!(words.iter().all(|w| f.may_contain(word_hash(w))));
        let false_pos = (0..10_000)
            .filter(|i| f.may_contain(word_hash(&format!("other{i:06}"))))
            .count();
        assert!(false_pos < 300, "{false_pos} false positives of 10000");
        assert!(b.finish().is_none(), "a finished builder starts empty");
    }

    #[test]
    fn full_block() {
        let mut b = BlockBuilder::default();
        for i in 0..BLOCK_RECORDS {
            assert!(!b.is_full());
            b.add([word_hash(&format!("{i:08}"))]);
        }
        assert!(b.is_full());
        let done = b.finish().unwrap();
        assert_eq!(done.filter.block, 0);
        assert!(done.repeated.is_empty());
        assert!(!b.is_full());
        assert!(b.finish().is_none());
        // A word of a recent block is repeated even when single here; one
        // last seen RECENT_BLOCKS blocks ago is not.
        b.add([word_hash("00000007"), word_hash("fresh12345")]);
        let done = b.finish().unwrap();
        assert!(done.repeated.contains(&word_hash("00000007")));
        assert!(!done.repeated.contains(&word_hash("fresh12345")));
        assert!(done.filter.may_contain(word_hash("fresh12345")));
        for _ in 0..RECENT_BLOCKS {
            b.add([word_hash("other12345")]);
            b.finish().unwrap();
        }
        b.add([word_hash("fresh12345")]);
        let done = b.finish().unwrap();
        assert!(done.repeated.is_empty(), "{:?}", done.repeated);
    }

    #[test]
    fn a_failed_append_adds_nothing_and_can_be_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BlockBuilder::default();
        b.add([word_hash("abc12345")]);
        let f = b.finish().unwrap().filter;
        let mut file = FilterFile::open(dir.path()).unwrap();
        // The file's path is taken by a directory: the append fails.
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        assert!(file.append(std::slice::from_ref(&f)).is_err());
        assert!(file.is_empty());
        assert_eq!(file.bytes(), 0);
        std::fs::remove_dir(dir.path().join(FILE)).unwrap();
        file.append(std::slice::from_ref(&f)).unwrap();
        assert_eq!(file.candidates(&[word_hash("abc12345")]), vec![0]);
        drop(file);
        assert_eq!(FilterFile::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn file_round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BlockBuilder::starting_at(5);
        b.add([word_hash("abc123"), word_hash("zz9999")]);
        let f1 = b.finish().unwrap().filter;
        b.add([word_hash("qq12345")]);
        let f2 = b.finish().unwrap().filter;
        let mut file = FilterFile::open(dir.path()).unwrap();
        assert!(file.is_empty());
        assert_eq!(file.next_block(), 0);
        file.append(std::slice::from_ref(&f1)).unwrap();
        file.append(std::slice::from_ref(&f2)).unwrap();
        let bytes = file.bytes();
        assert_eq!(
            bytes,
            std::fs::metadata(dir.path().join(FILE)).unwrap().len()
        );
        drop(file);
        let file = FilterFile::open(dir.path()).unwrap();
        assert_eq!(file.filters, vec![f1.clone(), f2.clone()]);
        assert_eq!(file.next_block(), 7);
        assert_eq!(file.candidates(&[word_hash("qq12345")]), vec![6]);
        assert_eq!(
            file.candidates(&[word_hash("abc123"), word_hash("zz9999")]),
            vec![5]
        );
        assert!(file
            .candidates(&[word_hash("abc123"), word_hash("qq12345")])
            .is_empty());
        drop(file);
        // A torn last entry is dropped and the file cut back to the rest.
        let path = dir.path().join(FILE);
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() - 3]).unwrap();
        let mut file = FilterFile::open(dir.path()).unwrap();
        assert_eq!(file.filters, vec![f1.clone()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), file.bytes());
        file.append(std::slice::from_ref(&f2)).unwrap();
        drop(file);
        assert_eq!(FilterFile::open(dir.path()).unwrap().filters, vec![f1, f2]);
        // Garbage is not a panic.
        std::fs::write(&path, [0xff; 7]).unwrap();
        assert!(FilterFile::open(dir.path()).unwrap().is_empty());
    }
}
