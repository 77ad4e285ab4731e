//! Compressed in-memory samples of one series (the head, until a flush
//! writes them to Parquet).
//!
//! Samples that arrive in time order are appended to a byte buffer, each as
//! a header varint holding the zigzag delta-of-delta of its timestamp and a
//! 3-bit value tag, followed by the value's encoding:
//!
//! | tag | value |
//! |---|---|
//! | 0 | same bits as the previous value (nothing follows) |
//! | 1 | integer: zigzag varint of the difference to the previous value |
//! | 2 | XOR with the previous value's bits: a byte with the count of leading (high nibble) and trailing (low nibble) zero bytes, then the remaining bytes, high first |
//! | 3–6 | decimal with 1–4 fraction digits: zigzag varint of the difference of the scaled mantissas |
//! | 7 | escape for a delta-of-delta too large for the header: a byte with the real tag, then the full zigzag varint |
//!
//! Regular scrapes cost 2–4 bytes per sample instead of 16. A sample that
//! is not newer than the last appended one (late, or a rewrite of the same
//! timestamp) goes to a small sorted side list that wins over the buffer for
//! equal timestamps, so the last write wins as before.

use super::decimal::{self, mantissa};
use crate::model::Sample;
use crate::storage::varint::{put_varint, unzigzag, zigzag};

const TAG_SAME: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_XOR: u8 = 2;
const TAG_DEC: u8 = 3; // 3..=6: 1..=4 fraction digits
const TAG_ESCAPE: u8 = 7;
/// Fraction digits the tags can say (3–6: 1–4 digits).
const DEC_DIGITS: usize = 4;

/// One series' unflushed samples.
#[derive(Default, Clone)]
pub(super) struct HeadChunk {
    buf: Vec<u8>,
    /// Samples encoded in `buf`.
    n: u32,
    last_t: i64,
    last_dt: i64,
    last_v: u64,
    /// Samples not newer than `last_t` when they arrived: sorted, unique
    /// timestamps, newer writes than anything in `buf` with the same time.
    /// Boxed: 8 bytes instead of 24 in every series, and rarely used.
    #[allow(clippy::box_collection)]
    late: Option<Box<Vec<Sample>>>,
}

impl HeadChunk {
    /// A chunk holding `samples` (time-ordered, unique timestamps).
    pub fn from_sorted(samples: &[Sample]) -> Self {
        let mut c = HeadChunk::default();
        for s in samples {
            c.insert(*s);
        }
        c
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
            + self.late.as_ref().map_or(0, |l| {
                std::mem::size_of::<Vec<Sample>>() + l.capacity() * std::mem::size_of::<Sample>()
            })
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0 && self.late.is_none()
    }

    /// Adds a sample; false when it replaced one with the same timestamp.
    pub fn insert(&mut self, s: Sample) -> bool {
        if self.n == 0 || s.t_ms > self.last_t {
            self.append(s);
            return true;
        }
        let late = self.late.get_or_insert_with(Default::default);
        match late.binary_search_by_key(&s.t_ms, |x| x.t_ms) {
            Ok(i) => {
                late[i] = s;
                false
            }
            Err(i) => {
                late.insert(i, s);
                // Replacing a sample of the buffer does not add one.
                !Decoder::new(&self.buf, self.n)
                    .take_while(|x| x.t_ms <= s.t_ms)
                    .any(|x| x.t_ms == s.t_ms)
            }
        }
    }

    fn append(&mut self, s: Sample) {
        let dt = s.t_ms.wrapping_sub(self.last_t);
        let dod = zigzag(dt.wrapping_sub(self.last_dt));
        let bits = s.v.to_bits();
        let prev = f64::from_bits(self.last_v);
        if self.buf.len() + 24 > self.buf.capacity() {
            // Grow by a quarter: chunks are many and small, so doubling
            // would waste a third of the head on average.
            let more = (self.buf.len() / 4).max(32);
            self.buf.reserve_exact(more);
        }
        let (tag, value) = encode_value(prev, self.last_v, s.v, bits);
        if dod < 1 << 60 {
            put_varint(&mut self.buf, (dod << 3) | tag as u64);
        } else {
            put_varint(&mut self.buf, TAG_ESCAPE as u64);
            self.buf.push(tag);
            put_varint(&mut self.buf, dod);
        }
        value.write(&mut self.buf);
        self.n += 1;
        self.last_t = s.t_ms;
        self.last_dt = dt;
        self.last_v = bits;
    }

    /// Samples in `[start, end]`, time-ordered, unique timestamps.
    pub fn read(&self, start: i64, end: i64, out: &mut Vec<Sample>) {
        let from = out.len();
        let buffered = Decoder::new(&self.buf, self.n)
            .skip_while(|s| s.t_ms < start)
            .take_while(|s| s.t_ms <= end);
        match &self.late {
            None => out.extend(buffered),
            Some(late) => {
                let lo = late.partition_point(|s| s.t_ms < start);
                let hi = late.partition_point(|s| s.t_ms <= end);
                let mut late = late[lo..hi].iter().peekable();
                for s in buffered {
                    while let Some(l) = late.next_if(|l| l.t_ms <= s.t_ms) {
                        out.push(*l);
                    }
                    if out.len() > from && out[out.len() - 1].t_ms == s.t_ms {
                        continue; // the late write wins
                    }
                    out.push(s);
                }
                out.extend(late);
            }
        }
    }

    /// Every sample, time-ordered.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(self.n as usize);
        self.read(i64::MIN, i64::MAX, &mut out);
        out
    }

    /// Adds `older`'s samples where this chunk has none at the same time
    /// (this chunk's writes are newer).
    pub fn merge_older(&mut self, older: &HeadChunk) {
        let mine = self.samples();
        let theirs = older.samples();
        let mut all = Vec::with_capacity(mine.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while i < mine.len() || j < theirs.len() {
            match (mine.get(i), theirs.get(j)) {
                (Some(a), Some(b)) if a.t_ms == b.t_ms => {
                    all.push(*a);
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a.t_ms < b.t_ms => {
                    all.push(*a);
                    i += 1;
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    all.push(*b);
                    j += 1;
                }
                (Some(a), None) => {
                    all.push(*a);
                    i += 1;
                }
                (None, None) => break,
            }
        }
        *self = HeadChunk::from_sorted(&all);
    }
}

/// A value's encoding after the header.
enum Value {
    None,
    Varint(u64),
    Xor {
        shape: u8,
        bytes: [u8; 8],
        len: usize,
    },
}

impl Value {
    fn write(self, buf: &mut Vec<u8>) {
        match self {
            Value::None => {}
            Value::Varint(x) => put_varint(buf, x),
            Value::Xor { shape, bytes, len } => {
                buf.push(shape);
                buf.extend_from_slice(&bytes[8 - len..]);
            }
        }
    }
}

fn encode_value(prev: f64, prev_bits: u64, v: f64, bits: u64) -> (u8, Value) {
    if bits == prev_bits {
        return (TAG_SAME, Value::None);
    }
    for k in 0..=DEC_DIGITS {
        // Both as mantissas with k digits that decode to exactly their bits.
        let Some(ma) = mantissa(v, k) else { continue };
        let Some(mb) = mantissa(prev, k) else {
            continue;
        };
        let tag = if k == 0 {
            TAG_INT
        } else {
            TAG_DEC + k as u8 - 1
        };
        return (tag, Value::Varint(zigzag(ma.wrapping_sub(mb))));
    }
    let x = bits ^ prev_bits;
    let lead = (x.leading_zeros() / 8) as usize;
    let trail = (x.trailing_zeros() / 8) as usize;
    let len = 8 - lead - trail;
    (
        TAG_XOR,
        Value::Xor {
            shape: ((lead as u8) << 4) | trail as u8,
            bytes: (x >> (trail * 8)).to_be_bytes(),
            len,
        },
    )
}

/// Walks the samples of a chunk's buffer.
struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u32,
    t: i64,
    dt: i64,
    v: u64,
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8], n: u32) -> Self {
        Decoder {
            buf,
            pos: 0,
            left: n,
            t: 0,
            dt: 0,
            v: 0,
        }
    }

    fn varint(&mut self) -> u64 {
        let (x, used) = get_varint(&self.buf[self.pos..]);
        self.pos += used;
        x
    }
}

impl Iterator for Decoder<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let h = self.varint();
        let (tag, dod) = if h as u8 & 7 == TAG_ESCAPE && h >> 3 == 0 {
            let tag = self.buf[self.pos];
            self.pos += 1;
            (tag, self.varint())
        } else {
            ((h & 7) as u8, h >> 3)
        };
        self.dt = self.dt.wrapping_add(unzigzag(dod));
        self.t = self.t.wrapping_add(self.dt);
        self.v = match tag {
            TAG_SAME => self.v,
            TAG_XOR => {
                let shape = self.buf[self.pos];
                let (lead, trail) = ((shape >> 4) as usize, (shape & 15) as usize);
                let len = 8 - lead - trail;
                let mut x = 0u64;
                for b in &self.buf[self.pos + 1..self.pos + 1 + len] {
                    x = (x << 8) | *b as u64;
                }
                self.pos += 1 + len;
                self.v ^ (x << (trail * 8))
            }
            _ => {
                let k = if tag == TAG_INT {
                    0
                } else {
                    (tag - TAG_DEC + 1) as usize
                };
                // The encoder checked that the previous value has this
                // mantissa.
                let prev = mantissa(f64::from_bits(self.v), k).unwrap_or_default();
                let d = unzigzag(self.varint());
                decimal::decode(prev.wrapping_add(d), k as i8).to_bits()
            }
        };
        Some(Sample {
            t_ms: self.t,
            v: f64::from_bits(self.v),
        })
    }
}

fn get_varint(b: &[u8]) -> (u64, usize) {
    let mut x = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        x |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return (x, i + 1);
        }
    }
    (x, b.len().min(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(t_ms: i64, v: f64) -> Sample {
        Sample { t_ms, v }
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.t_ms == y.t_ms && x.v.to_bits() == y.v.to_bits())
    }

    #[test]
    fn scrape_like_samples_take_a_few_bytes_each() {
        let mut c = HeadChunk::default();
        let mut want = Vec::new();
        let (mut t, mut counter) = (1_764_000_000_000i64, 1000.0);
        for i in 0..480 {
            t += 15_000 + (i * 7 % 5) - 2;
            counter += (i * 37 % 200) as f64;
            want.push(s(t, counter));
            assert!(c.insert(s(t, counter)));
        }
        assert!(same(&c.samples(), &want));
        let per_sample = c.buf.len() as f64 / 480.0;
        assert!(per_sample < 3.5, "{per_sample} bytes per sample");
        // Growth by a quarter keeps the spare capacity small.
        assert!(c.heap_bytes() <= c.buf.len() * 5 / 4 + 64);
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let values = [
            0.0,
            -0.0,
            1.0,
            1.0,
            12.34,
            12.35,
            -7.5,
            0.1 + 0.2,
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0002), // the stale marker
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e-300,
            9_007_199_254_740_993.0,
            f64::MIN_POSITIVE,
            42.0,
            0.0001,
            123456.7891,
        ];
        let mut c = HeadChunk::default();
        let want: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| s(i as i64 * 1000, *v))
            .collect();
        for x in &want {
            c.insert(*x);
        }
        assert!(same(&c.samples(), &want));
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        let want = vec![
            s(i64::MIN + 1, 1.0),
            s(-5, 2.0),
            s(0, 3.0),
            s(i64::MAX / 2, 4.0),
            s(i64::MAX, 5.0),
        ];
        let c = HeadChunk::from_sorted(&want);
        assert!(same(&c.samples(), &want));
    }

    #[test]
    fn late_samples_and_rewrites_win_and_are_counted_once() {
        let mut c = HeadChunk::default();
        for t in [10, 20, 30, 40] {
            assert!(c.insert(s(t, t as f64)));
        }
        assert!(c.insert(s(25, 25.0)), "a new late sample");
        assert!(!c.insert(s(20, 200.0)), "rewrites a buffered sample");
        assert!(!c.insert(s(40, 400.0)), "rewrites the last sample");
        assert!(!c.insert(s(25, 250.0)), "rewrites a late sample");
        assert!(c.insert(s(5, 5.0)));
        assert!(c.insert(s(50, 50.0)));
        let got: Vec<(i64, f64)> = c.samples().iter().map(|x| (x.t_ms, x.v)).collect();
        assert_eq!(
            got,
            vec![
                (5, 5.0),
                (10, 10.0),
                (20, 200.0),
                (25, 250.0),
                (30, 30.0),
                (40, 400.0),
                (50, 50.0)
            ]
        );
        let mut part = Vec::new();
        c.read(20, 40, &mut part);
        let got: Vec<i64> = part.iter().map(|x| x.t_ms).collect();
        assert_eq!(got, vec![20, 25, 30, 40]);
        part.clear();
        c.read(41, 49, &mut part);
        assert!(part.is_empty());
    }

    #[test]
    fn merging_an_older_chunk_keeps_the_newer_writes() {
        let old = HeadChunk::from_sorted(&[s(1, 1.0), s(2, 2.0), s(3, 3.0)]);
        let mut new = HeadChunk::from_sorted(&[s(2, 20.0), s(4, 40.0)]);
        new.merge_older(&old);
        let got: Vec<(i64, f64)> = new.samples().iter().map(|x| (x.t_ms, x.v)).collect();
        assert_eq!(got, vec![(1, 1.0), (2, 20.0), (3, 3.0), (4, 40.0)]);
        assert!(HeadChunk::default().is_empty());
        assert!(!new.is_empty());
    }

    proptest! {
        #[test]
        fn any_writes_read_back_as_last_write_wins(
            writes in proptest::collection::vec(
                (-1000i64..1000, prop_oneof![
                    any::<f64>(),
                    (-1000i64..1000).prop_map(|x| x as f64),
                    (-100000i64..100000).prop_map(|x| x as f64 / 100.0),
                ]),
                0..200,
            ),
            start in -1100i64..1100,
            len in 0i64..2200,
        ) {
            let mut c = HeadChunk::default();
            let mut truth = std::collections::BTreeMap::new();
            for (t, v) in &writes {
                let added = c.insert(s(*t, *v));
                prop_assert_eq!(added, truth.insert(*t, *v).is_none());
            }
            let want: Vec<Sample> = truth
                .range(start..=start + len)
                .map(|(t, v)| s(*t, *v))
                .collect();
            let mut got = Vec::new();
            c.read(start, start + len, &mut got);
            prop_assert!(same(&got, &want));
        }
    }
}
