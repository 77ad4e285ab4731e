//! Typed variable columns of row blocks ([`super::rows`], version 3).
//!
//! The values of one variable of one template within a block (a *slot*:
//! the order ids of one line shape, its durations, its request ids) are
//! mostly alike: one number between the same text, or hex digits of one
//! length. Kept as text, each digit costs zstd about 3.3 bits and every
//! value its length and its constant text; kept as numbers, a value costs
//! little more than its information. Each slot is written as one of:
//!
//! - `CONST`: every value the same — the value once;
//! - `NUMBER`: every value is `prefix digits suffix` with one prefix and
//!   one suffix, and its digits either in canonical form (no leading zero)
//!   or all of one width (zero-padded) — the affixes and the width once,
//!   the numbers bit-packed in runs of [`RUN`] (`varint min | u8 bits |
//!   the values minus min`, least significant bit first);
//! - `HEX`: every value is hex digits of one length and one case — the
//!   length and the case once, the digits packed two to a byte;
//! - `TEXT`: anything else — `varint length | bytes` per value.
//!
//! The kind and its constant text go to the block's `variables` column,
//! the packed numbers and digits to its `packed` column; both are zstd
//! compressed with the rest of the block. Decoding checks every length
//! and width, so damaged input is an error (`None`), never a panic.

use crate::storage::varint::{put_prefixed, put_varint, read_prefixed, read_varint};

const TEXT: u8 = 0;
const CONST: u8 = 1;
const NUMBER: u8 = 2;
const HEX: u8 = 3;

/// Numbers per bit-packed run (each with its own minimum and width).
pub const RUN: usize = 128;
/// Most digits of a number slot (10^19 - 1 fits in a u64).
const MAX_DIGITS: usize = 19;
/// Longest hex value kept as packed digits.
const MAX_HEX: usize = 255;

/// A value split around its only run of ASCII digits.
fn split_number(v: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let from = v.iter().position(u8::is_ascii_digit)?;
    let to = from + v[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    if v[to..].iter().any(u8::is_ascii_digit) || to - from > MAX_DIGITS {
        return None;
    }
    Some((&v[..from], &v[from..to], &v[to..]))
}

/// The decimal digits of `n`, in `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn parse_digits(d: &[u8]) -> u64 {
    d.iter().fold(0, |n, b| n * 10 + (b - b'0') as u64)
}

/// The number layout of a slot: (prefix, suffix, width — 0 for canonical
/// digits), if every value fits one.
fn number_layout<'a>(values: &[&'a [u8]]) -> Option<(&'a [u8], &'a [u8], usize)> {
    let (prefix, first, suffix) = split_number(values.first()?)?;
    let (mut canonical, width) = (true, first.len());
    let mut same_width = true;
    for v in values {
        let (p, d, s) = split_number(v)?;
        if p != prefix || s != suffix {
            return None;
        }
        canonical &= d.len() == 1 || d[0] != b'0';
        same_width &= d.len() == width;
        if !canonical && !same_width {
            return None;
        }
    }
    Some((prefix, suffix, if canonical { 0 } else { width }))
}

/// The hex layout of a slot: (length, upper case), if every value is hex
/// digits of one length and one case.
fn hex_layout(values: &[&[u8]]) -> Option<(usize, bool)> {
    let len = values.first()?.len();
    if len == 0 || len > MAX_HEX {
        return None;
    }
    let (mut lower, mut upper) = (false, false);
    for v in values {
        if v.len() != len {
            return None;
        }
        for b in v.iter() {
            match b {
                b'0'..=b'9' => {}
                b'a'..=b'f' => lower = true,
                b'A'..=b'F' => upper = true,
                _ => return None,
            }
        }
    }
    (!(lower && upper)).then_some((len, upper))
}

fn nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn hex_digit(n: u8, upper: bool) -> u8 {
    match (n, upper) {
        (0..=9, _) => b'0' + n,
        (_, false) => b'a' + n - 10,
        (_, true) => b'A' + n - 10,
    }
}

/// Least-significant-bit-first bit packing.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    bits: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, v: u64, width: u32) {
        self.acc |= (v as u128) << self.bits;
        self.bits += width;
        while self.bits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits -= 8;
        }
    }

    fn finish(self) {
        if self.bits > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

fn width_of(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Packs `nums` in runs of [`RUN`].
fn pack(nums: &[u64], out: &mut Vec<u8>) {
    for run in nums.chunks(RUN) {
        let min = run.iter().copied().min().unwrap_or(0);
        let width = width_of(run.iter().map(|n| n - min).max().unwrap_or(0));
        put_varint(out, min);
        out.push(width as u8);
        let mut w = BitWriter {
            out: &mut *out,
            acc: 0,
            bits: 0,
        };
        for n in run {
            w.put(n - min, width);
        }
        w.finish();
    }
}

/// Unpacks `count` numbers packed by [`pack`] from `buf` at `pos`.
fn unpack(count: usize, buf: &[u8], pos: &mut usize, out: &mut Vec<u64>) -> Option<()> {
    let mut left = count;
    while left > 0 {
        let n = left.min(RUN);
        let min = read_varint(buf, pos)?;
        let width = *buf.get(*pos)? as u32;
        *pos += 1;
        if width > 64 {
            return None;
        }
        let bytes = (n * width as usize).div_ceil(8);
        let data = buf.get(*pos..pos.checked_add(bytes)?)?;
        *pos += bytes;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let (mut acc, mut bits, mut next) = (0u128, 0u32, 0usize);
        for _ in 0..n {
            while bits < width {
                acc |= (*data.get(next)? as u128) << bits;
                next += 1;
                bits += 8;
            }
            out.push(min.checked_add(acc as u64 & mask)?);
            acc >>= width;
            bits -= width;
        }
        left -= n;
    }
    Some(())
}

/// Writes one slot's values (in record order): its kind and constant
/// text to `text`, its numbers or digits to `packed`.
pub fn encode(values: &[&[u8]], text: &mut Vec<u8>, packed: &mut Vec<u8>) {
    let Some(first) = values.first() else {
        text.push(TEXT);
        return;
    };
    if values.iter().all(|v| v == first) {
        text.push(CONST);
        put_prefixed(text, first);
    } else if let Some((prefix, suffix, width)) = number_layout(values) {
        text.push(NUMBER);
        put_prefixed(text, prefix);
        put_prefixed(text, suffix);
        text.push(width as u8);
        let nums: Vec<u64> = values
            .iter()
            .map(|v| parse_digits(&v[prefix.len()..v.len() - suffix.len()]))
            .collect();
        pack(&nums, packed);
    } else if let Some((len, upper)) = hex_layout(values) {
        text.push(HEX);
        put_varint(text, len as u64);
        text.push(upper as u8);
        for v in values {
            for pair in v.chunks(2) {
                let hi = nibble(pair[0]);
                let lo = pair.get(1).map_or(0, |b| nibble(*b));
                packed.push(hi << 4 | lo);
            }
        }
    } else {
        text.push(TEXT);
        for v in values {
            put_prefixed(text, v);
        }
    }
}

/// Reads back a slot of `count` values written by [`encode`]: each value
/// is appended to `out` and its byte range there pushed to `ranges`.
/// `None` when the input is damaged. `count` comes from the block's own
/// record count (bounded), not from the slot.
pub fn decode(
    count: usize,
    text: &[u8],
    tpos: &mut usize,
    packed: &[u8],
    ppos: &mut usize,
    out: &mut Vec<u8>,
    ranges: &mut Vec<(u32, u32)>,
) -> Option<()> {
    let kind = *text.get(*tpos)?;
    *tpos += 1;
    let mut push = |out: &mut Vec<u8>, from: usize| -> Option<()> {
        ranges.push((u32::try_from(from).ok()?, u32::try_from(out.len()).ok()?));
        Some(())
    };
    match kind {
        TEXT => {
            for _ in 0..count {
                let v = read_prefixed(text, tpos)?;
                let from = out.len();
                out.extend_from_slice(v);
                push(out, from)?;
            }
        }
        CONST => {
            let v = read_prefixed(text, tpos)?;
            for _ in 0..count {
                let from = out.len();
                out.extend_from_slice(v);
                push(out, from)?;
            }
        }
        NUMBER => {
            let prefix = read_prefixed(text, tpos)?;
            let suffix = read_prefixed(text, tpos)?;
            let width = *text.get(*tpos)? as usize;
            *tpos += 1;
            if width > MAX_DIGITS {
                return None;
            }
            let mut nums = Vec::with_capacity(count.min(packed.len() * 8 + RUN));
            unpack(count, packed, ppos, &mut nums)?;
            let mut buf = [0u8; 20];
            for n in nums {
                let from = out.len();
                out.extend_from_slice(prefix);
                let d = decimal(n, &mut buf);
                if width > 0 && d.len() > width {
                    return None;
                }
                out.extend(std::iter::repeat_n(b'0', width.saturating_sub(d.len())));
                out.extend_from_slice(d);
                out.extend_from_slice(suffix);
                push(out, from)?;
            }
        }
        HEX => {
            let len = usize::try_from(read_varint(text, tpos)?).ok()?;
            let upper = match *text.get(*tpos)? {
                0 => false,
                1 => true,
                _ => return None,
            };
            *tpos += 1;
            if len == 0 || len > MAX_HEX {
                return None;
            }
            let per = len.div_ceil(2);
            let all = packed.get(*ppos..ppos.checked_add(per.checked_mul(count)?)?)?;
            *ppos += all.len();
            for v in all.chunks(per) {
                let from = out.len();
                for (i, b) in v.iter().enumerate() {
                    out.push(hex_digit(b >> 4, upper));
                    if 2 * i + 1 < len {
                        out.push(hex_digit(b & 15, upper));
                    }
                }
                push(out, from)?;
            }
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[&str]) -> (u8, usize) {
        let vals: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let (mut text, mut packed) = (Vec::new(), Vec::new());
        encode(&vals, &mut text, &mut packed);
        let (mut tp, mut pp, mut out, mut ranges) = (0, 0, Vec::new(), Vec::new());
        decode(
            vals.len(),
            &text,
            &mut tp,
            &packed,
            &mut pp,
            &mut out,
            &mut ranges,
        )
        .expect("decodes");
        assert_eq!(tp, text.len(), "text read whole: {values:?}");
        assert_eq!(pp, packed.len(), "packed read whole: {values:?}");
        let back: Vec<&[u8]> = ranges
            .iter()
            .map(|(f, t)| &out[*f as usize..*t as usize])
            .collect();
        assert_eq!(back, vals);
        (text[0], text.len() + packed.len())
    }

    #[test]
    fn every_layout_round_trips() {
        assert_eq!(round_trip(&["v1", "v1", "v1"]).0, CONST);
        assert_eq!(round_trip(&["1234ms", "7ms", "0ms", "99ms"]).0, NUMBER);
        assert_eq!(round_trip(&["0042", "9999", "0000", "1000"]).0, NUMBER);
        assert_eq!(round_trip(&["ord-17", "ord-1"]).0, NUMBER);
        assert_eq!(round_trip(&["18446744073709551615", "1"]).0, TEXT);
        assert_eq!(round_trip(&["9999999999999999999", "0"]).0, NUMBER);
        assert_eq!(round_trip(&["3fa9c0de", "00000000", "ffffffff"]).0, HEX);
        assert_eq!(round_trip(&["3FA9C", "00000", "ABCDE"]).0, HEX);
        assert_eq!(round_trip(&["3fa", "3FA"]).0, TEXT);
        // Leading zeros of different widths, mixed affixes, two digit runs.
        assert_eq!(round_trip(&["007", "7", "70"]).0, TEXT);
        assert_eq!(round_trip(&["g1", "h2"]).0, TEXT);
        assert_eq!(round_trip(&["1a1", "2a2"]).0, HEX);
        assert_eq!(round_trip(&["x1y2", "x3y4"]).0, TEXT);
        assert_eq!(round_trip(&["héllo1", "wörld2", "ünï"]).0, TEXT);
        assert_eq!(round_trip(&["é1", "é22"]).0, NUMBER);
        assert_eq!(round_trip(&[]).0, TEXT);
        assert_eq!(round_trip(&[""]).0, CONST);
        assert_eq!(round_trip(&["", "1"]).0, TEXT);
    }

    #[test]
    fn numbers_cost_about_their_bits() {
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: u64| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r % below
        };
        let owned: Vec<String> = (0..1000)
            .map(|_| format!("{}ms", next(1_000_000)))
            .collect();
        let values: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (kind, bytes) = round_trip(&values);
        assert_eq!(kind, NUMBER);
        // 20 bits a value and a few bytes per run.
        assert!(bytes <= 1000 * 20 / 8 + 8 * 5 + 16, "{bytes} bytes");
        let owned: Vec<String> = (0..300)
            .map(|_| format!("{:016x}", next(u64::MAX)))
            .collect();
        let values: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (kind, bytes) = round_trip(&values);
        assert_eq!(kind, HEX);
        assert_eq!(bytes, 300 * 8 + 3);
        // Runs of one value and values at the ends of the range.
        let owned: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => "0".to_string(),
                1 => u64::MAX.to_string()[..19].to_string(),
                _ => (i / 7).to_string(),
            })
            .collect();
        let values: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert_eq!(round_trip(&values).0, NUMBER);
    }

    #[test]
    fn damaged_input_is_refused_without_panic() {
        let cases: [&[&str]; 4] = [
            &["12ms", "345ms", "6ms"],
            &["3fa9c0de", "00000000"],
            &["a", "bb", "ccc"],
            &["same", "same"],
        ];
        for values in cases {
            let vals: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            let (mut text, mut packed) = (Vec::new(), Vec::new());
            encode(&vals, &mut text, &mut packed);
            let mut both = text.clone();
            both.extend_from_slice(&packed);
            let split = text.len();
            for cut in 0..both.len() {
                for flip in [None, Some(0x01u8), Some(0x80), Some(0xff)] {
                    let mut b = both.clone();
                    match flip {
                        None => b.truncate(cut),
                        Some(x) => b[cut] ^= x,
                    }
                    let (t, p) = b.split_at(split.min(b.len()));
                    let (mut tp, mut pp, mut out, mut ranges) = (0, 0, Vec::new(), Vec::new());
                    let _ = decode(vals.len(), t, &mut tp, p, &mut pp, &mut out, &mut ranges);
                }
            }
        }
    }
}
