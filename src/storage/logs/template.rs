//! Body templates: machine-written log lines repeat a few shapes ("GET
//! /api/v1/<n> completed in <n>ms user=alice") with variable parts that are
//! almost always words with digits (ids, counts, durations, addresses). A
//! body's *template* is its text with every word holding an ASCII digit (or
//! too long to index) cut out. A partition numbers its templates; a record
//! with a template carries its number in the indexed `template` field and
//! only its variable words in the body postings, so the words of the
//! template are indexed once per template, not once per record:
//!
//! - a text or phrase search made of words without digits matches the
//!   records of the templates holding that phrase, exactly (a variable word
//!   always has a digit, so it can never equal such a word);
//! - one with digit words matches a template's records only where the
//!   template has variables at those places; the candidates (template and
//!   the digit words' postings) are checked against their stored body.
//!
//! Bodies over [`MAX_BODY_BYTES`], structured bodies, and new shapes once a
//! partition holds [`MAX_TEMPLATES`] templates (or [`MAX_TEXT_BYTES`] of
//! their text) are indexed word by word as before.
//!
//! File format (`templates` in a partition directory): an append-only entry
//! file ([`super::framed`]); an entry's payload is `varint first number |
//! varint count | count × (varint length | template)`, where a template is
//! `varint variables | one byte per variable (1: an index word, 0: too long
//! to index) | variables + 1 × (varint length | literal text)`. Entries are
//! appended and synced before the index commit whose records use them.

use std::collections::HashMap;
use std::path::Path;

use super::framed::{frame, FramedFile};
use super::{bloom, lower_into, Words, MAX_TOKEN_BYTES};
use crate::storage::varint::{put_prefixed, put_varint, read_prefixed, read_varint};
use crate::storage::StorageError;

/// File name of a partition's templates.
pub const FILE: &str = "templates";
/// Longest body (bytes) given a template.
pub const MAX_BODY_BYTES: usize = 4096;
/// Most templates in one partition.
pub const MAX_TEMPLATES: usize = 50_000;
/// Most bytes of template text in one partition.
pub const MAX_TEXT_BYTES: usize = 16 << 20;
/// Largest entry payload written (more templates go to further entries)
/// and read (guards against a damaged length).
const MAX_PAYLOAD: usize = 1 << 20;
const MAX_READ_PAYLOAD: usize = 64 << 20;

/// Whether a (lower-case) body word is a variable: it holds an ASCII digit.
pub fn is_variable(w: &str) -> bool {
    w.bytes().any(|b| b.is_ascii_digit())
}

/// A string body split into its template and its variable words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The encoded template (the key a partition numbers it by).
    pub key: Vec<u8>,
    /// The variable words the body postings keep: index words that are not
    /// block words ([`bloom::is_block_word`]), lower-case, with their
    /// position among the body's words.
    pub vars: Vec<(usize, String)>,
    /// Every variable as written, in order (`varint length | text` each):
    /// with the template, the body again ([`Templates::render`]).
    pub values: Vec<u8>,
}

/// The template of a string body (`None` when it is over [`MAX_BODY_BYTES`]).
pub fn shape(text: &str) -> Option<Shape> {
    if text.len() > MAX_BODY_BYTES {
        return None;
    }
    let mut kinds = Vec::new();
    let mut segments: Vec<&str> = Vec::new();
    let mut vars = Vec::new();
    let mut values = Vec::new();
    let mut runs = Words::new(text);
    let (mut literal_from, mut position) = (0, 0);
    let mut lower = String::new();
    while let Some((from, to)) = runs.next_run() {
        let w = &text[from..to];
        let indexed = w.len() < MAX_TOKEN_BYTES;
        if indexed && !is_variable(w) {
            position += 1;
            continue;
        }
        segments.push(&text[literal_from..from]);
        literal_from = to;
        kinds.push(indexed as u8);
        put_prefixed(&mut values, w.as_bytes());
        if indexed {
            lower_into(w, &mut lower);
            if !bloom::is_block_word(&lower) {
                vars.push((position, lower.clone()));
            }
            position += 1;
        }
    }
    segments.push(&text[literal_from..]);
    let mut key = Vec::with_capacity(text.len() + 8);
    put_prefixed(&mut key, &kinds);
    for s in segments {
        put_prefixed(&mut key, s.as_bytes());
    }
    Some(Shape { key, vars, values })
}

/// One template's body words in order: `Some(word)` for a literal word,
/// `None` for a variable index word.
type TemplateWords = Vec<Option<Box<str>>>;

/// The words of an encoded template (`None` if it is damaged).
fn decode(key: &[u8]) -> Option<TemplateWords> {
    let mut pos = 0;
    let n = usize::try_from(read_varint(key, &mut pos)?).ok()?;
    let kinds = key.get(pos..pos.checked_add(n)?)?;
    pos += n;
    let mut words = Vec::new();
    for i in 0..=n {
        let seg = std::str::from_utf8(read_prefixed(key, &mut pos)?).ok()?;
        super::for_each_word(seg, |w| words.push(Some(w.into())));
        match kinds.get(i) {
            Some(1) => words.push(None),
            Some(0) | None => {}
            Some(_) => return None,
        }
    }
    (pos == key.len()).then_some(words)
}

/// A partition's templates: read from its file, numbered at ingest, and
/// appended to the file before the commit that uses them.
#[derive(Debug)]
pub struct Templates {
    file: FramedFile,
    table: Table,
    /// Templates `..persisted` are in the file.
    persisted: usize,
    /// Most templates numbered ([`MAX_TEMPLATES`]).
    max: usize,
}

#[derive(Debug, Default)]
struct Table {
    numbers: HashMap<Box<[u8]>, u32>,
    /// Encoded templates and their words, by number.
    keys: Vec<Box<[u8]>>,
    words: Vec<TemplateWords>,
    /// Per literal word, the templates holding it (ascending, each once).
    by_word: HashMap<Box<str>, Vec<u32>>,
    text_bytes: usize,
}

impl Table {
    /// Adds the templates of one file entry; false (nothing added) when it
    /// is damaged or does not continue the numbering.
    fn read_entry(&mut self, payload: &[u8]) -> bool {
        let mut pos = 0;
        let (Some(first), Some(count)) = (
            read_varint(payload, &mut pos),
            read_varint(payload, &mut pos),
        ) else {
            return false;
        };
        if first != self.keys.len() as u64 {
            return false;
        }
        let mut new: Vec<(&[u8], TemplateWords)> = Vec::new();
        for _ in 0..count {
            let Some(key) = read_prefixed(payload, &mut pos) else {
                return false;
            };
            match decode(key) {
                Some(words) => new.push((key, words)),
                None => return false,
            }
        }
        if pos != payload.len()
            || self.keys.len() + new.len() > MAX_TEMPLATES
            || new.iter().any(|(k, _)| self.numbers.contains_key(*k))
        {
            return false;
        }
        for (key, words) in new {
            self.insert(key, words);
        }
        true
    }

    fn insert(&mut self, key: &[u8], words: TemplateWords) -> u32 {
        let n = self.keys.len() as u32;
        for w in words.iter().flatten() {
            let list = self.by_word.entry(w.clone()).or_default();
            if list.last() != Some(&n) {
                list.push(n);
            }
        }
        self.text_bytes += key.len();
        self.numbers.insert(key.into(), n);
        self.keys.push(key.into());
        self.words.push(words);
        n
    }
}

impl Templates {
    /// Reads the templates of a partition directory, dropping a torn tail.
    pub fn open(dir: &Path) -> Result<Templates, StorageError> {
        let mut table = Table::default();
        let file = FramedFile::open(dir.join(FILE), MAX_READ_PAYLOAD, "template", |p| {
            table.read_entry(p)
        })?;
        let persisted = table.keys.len();
        Ok(Templates {
            file,
            table,
            persisted,
            max: MAX_TEMPLATES,
        })
    }

    /// Numbers at most `max` templates (at most [`MAX_TEMPLATES`]); bodies
    /// of new shapes beyond are indexed word by word.
    pub fn limit(&mut self, max: usize) {
        self.max = max.min(MAX_TEMPLATES);
    }

    /// The number of a template (given one if it is new); `None` when the
    /// partition is full or the key is damaged.
    pub fn number(&mut self, key: &[u8]) -> Option<u32> {
        let t = &mut self.table;
        if let Some(n) = t.numbers.get(key) {
            return Some(*n);
        }
        if t.keys.len() >= self.max || t.text_bytes + key.len() > MAX_TEXT_BYTES {
            return None;
        }
        let words = decode(key)?;
        Some(t.insert(key, words))
    }

    /// Appends the templates numbered since the last call to the file and
    /// syncs it. On an error nothing is marked written: the next call
    /// writes them again.
    pub fn persist(&mut self) -> Result<(), StorageError> {
        let keys = &self.table.keys;
        let mut buf = Vec::new();
        let mut from = self.persisted;
        while from < keys.len() {
            let mut payload = Vec::new();
            let mut to = from;
            let mut body = Vec::new();
            while to < keys.len() && (to == from || body.len() < MAX_PAYLOAD / 2) {
                put_prefixed(&mut body, &keys[to]);
                to += 1;
            }
            put_varint(&mut payload, from as u64);
            put_varint(&mut payload, (to - from) as u64);
            payload.extend_from_slice(&body);
            frame(&payload, &mut buf);
            from = to;
        }
        self.file.append(&buf)?;
        self.persisted = keys.len();
        Ok(())
    }

    /// The templates in which `words` (lower-case, in order, at least one
    /// without a digit) can occur adjacent: each word without a digit on
    /// an equal literal word, each word with one on a variable.
    pub fn matching(&self, words: &[String]) -> Vec<u32> {
        let Some(lists) = words
            .iter()
            .filter(|w| !is_variable(w))
            .map(|w| self.table.by_word.get(w.as_str()))
            .collect::<Option<Vec<_>>>()
        else {
            return Vec::new();
        };
        let Some(rarest) = lists.into_iter().min_by_key(|l| l.len()) else {
            return Vec::new();
        };
        rarest
            .iter()
            .copied()
            .filter(|n| {
                let t = &self.table.words[*n as usize];
                t.len() >= words.len()
                    && t.windows(words.len()).any(|win| {
                        win.iter().zip(words).all(|(slot, w)| match slot {
                            Some(lit) => **lit == **w,
                            None => is_variable(w),
                        })
                    })
            })
            .collect()
    }

    /// Appends the body of template `n` with its variables `values` (as
    /// in [`Shape::values`]) to `out`; false when either is unknown or
    /// damaged (`out` may then hold part of it).
    pub fn render(&self, n: u32, values: &[u8], out: &mut String) -> bool {
        let mut vars = Vec::new();
        let mut pos = 0;
        while pos < values.len() {
            let Some(v) = read_prefixed(values, &mut pos) else {
                return false;
            };
            vars.push(v);
        }
        self.slots(n) == Some(vars.len()) && self.render_with(n, |i| vars.get(i).copied(), out)
    }

    /// The number of variables of template `n`.
    pub fn slots(&self, n: u32) -> Option<usize> {
        let key = self.table.keys.get(n as usize)?;
        usize::try_from(read_varint(key, &mut 0)?).ok()
    }

    /// Appends the body of template `n` to `out`, its `i`-th variable
    /// being `var(i)`; false when the template is unknown, a variable is
    /// missing or not UTF-8 (`out` may then hold part of it).
    pub fn render_with<'v>(
        &self,
        n: u32,
        mut var: impl FnMut(usize) -> Option<&'v [u8]>,
        out: &mut String,
    ) -> bool {
        let Some(key) = self.table.keys.get(n as usize) else {
            return false;
        };
        let mut k = 0;
        let Some(slots) = read_varint(key, &mut k).and_then(|n| usize::try_from(n).ok()) else {
            return false;
        };
        k += slots;
        for i in 0..=slots {
            let Some(seg) = read_prefixed(key, &mut k) else {
                return false;
            };
            match std::str::from_utf8(seg) {
                Ok(seg) => out.push_str(seg),
                Err(_) => return false,
            }
            if i == slots {
                break;
            }
            match var(i).map(std::str::from_utf8) {
                Some(Ok(v)) => out.push_str(v),
                _ => return false,
            }
        }
        true
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        self.file.bytes()
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.table.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::logs::tokenize;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
    }

    #[test]
    fn a_shape_cuts_out_digit_words_and_long_words() {
        let long = "x".repeat(MAX_TOKEN_BYTES);
        let text = format!("GET /v1/items/42 took 1234ms by Alice {long} ok");
        let s = shape(&text).unwrap();
        // `v1` and `42` are variables kept in the postings; `1234ms` is a
        // block word (left to the filters); the long word is cut out
        // without a position.
        assert_eq!(s.vars, vec![(1, "v1".to_string()), (3, "42".to_string())]);
        let w = decode(&s.key).unwrap();
        let shown: Vec<String> = w
            .iter()
            .map(|w| w.as_deref().unwrap_or("<var>").to_string())
            .collect();
        assert_eq!(
            shown,
            ["get", "<var>", "items", "<var>", "took", "<var>", "by", "alice", "ok"]
        );
        // Positions agree with the tokenizer (the long word has none).
        assert_eq!(w.len(), words(&text).len());
        // Same words and separators, other variables: the same template.
        let other = shape(&format!("GET /v2/items/7 took 9ms by Alice {long}y ok")).unwrap();
        assert_eq!(other.key, s.key);
        // Other literal text or case: another template.
        assert_ne!(
            shape("GET /v1/items/42 took 1234ms by Bob").unwrap().key,
            s.key
        );
        assert_ne!(
            shape("get /v1/items/42 took 1234ms by Alice").unwrap().key,
            s.key
        );
        assert!(shape(&"a ".repeat(MAX_BODY_BYTES)).is_none());
        // Template and values give the body back, byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let mut t = Templates::open(dir.path()).unwrap();
        for body in [
            text.as_str(),
            "",
            "42",
            "a1 b2",
            "no digits here",
            "x 7 y 8 z",
        ] {
            let s = shape(body).unwrap();
            let n = t.number(&s.key).unwrap();
            let mut out = String::new();
            assert!(t.render(n, &s.values, &mut out), "{body}");
            assert_eq!(out, body);
            // Too few or too many values: refused.
            if !s.values.is_empty() {
                assert!(!t.render(n, &s.values[..s.values.len() - 1], &mut String::new()));
            }
            let mut more = s.values.clone();
            more.extend_from_slice(&[1, b'9']);
            assert!(!t.render(n, &more, &mut String::new()), "{body}");
        }
        assert!(!t.render(99, &[], &mut String::new()));
        let empty = shape("").unwrap();
        assert_eq!(decode(&empty.key).unwrap(), Vec::<Option<Box<str>>>::new());
        let unicode = shape("Ünïcode straße 12 Ende").unwrap();
        assert_eq!(unicode.vars, vec![(2, "12".to_string())]);
        assert_eq!(decode(&unicode.key).unwrap().len(), 4);
    }

    #[test]
    fn matching_templates_follow_the_phrase_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Templates::open(dir.path()).unwrap();
        let texts = [
            "connection reset by peer after 12ms",
            "connection refused by peer",
            "GET /items/7 completed status=200",
            "peer reset connection 5 times",
        ];
        let numbers: Vec<u32> = texts
            .iter()
            .map(|x| t.number(&shape(x).unwrap().key).unwrap())
            .collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
        // Numbering is stable.
        assert_eq!(
            t.number(&shape("connection reset by peer after 9ms").unwrap().key),
            Some(0)
        );
        let m = |q: &str| t.matching(&words(q));
        assert_eq!(m("connection"), [0, 1, 3]);
        assert_eq!(m("connection reset"), [0]);
        assert_eq!(m("reset connection"), [3]);
        assert_eq!(m("peer after"), [0]);
        assert_eq!(m("after 99ms"), [0]);
        assert_eq!(m("by peer after 12ms"), [0]);
        assert!(m("after peer").is_empty());
        assert!(m("peer 12ms").is_empty());
        assert_eq!(m("items 8 completed status 404"), [2]);
        assert!(m("items completed").is_empty());
        assert!(m("zebra").is_empty());
        assert!(m("connection reset by peer after 12ms extra").is_empty());
        assert_eq!(m("peer"), [0, 1, 3]);
    }

    #[test]
    fn templates_persist_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        {
            let mut t = Templates::open(dir.path()).unwrap();
            t.number(&shape("alpha 1").unwrap().key);
            t.number(&shape("beta 2").unwrap().key);
            t.persist().unwrap();
            t.number(&shape("gamma 3").unwrap().key);
            t.persist().unwrap();
            // Nothing new: nothing written.
            let len = std::fs::metadata(&path).unwrap().len();
            t.persist().unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
            assert_eq!(t.bytes(), len);
            // Numbered but never persisted: gone after a restart.
            t.number(&shape("delta 4").unwrap().key);
        }
        let mut t = Templates::open(dir.path()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.matching(&words("gamma")), [2]);
        assert_eq!(t.number(&shape("delta 5").unwrap().key), Some(3));
        t.persist().unwrap();
        drop(t);
        // A torn last entry is cut off; the entries before it stay.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let mut t = Templates::open(dir.path()).unwrap();
        assert_eq!(t.len(), 3);
        assert!(std::fs::metadata(&path).unwrap().len() < len);
        // Numbering goes on from the file.
        assert_eq!(t.number(&shape("delta 6").unwrap().key), Some(3));
        t.persist().unwrap();
        assert_eq!(Templates::open(dir.path()).unwrap().len(), 4);
        // Garbage reads as empty (and is cut), never a panic.
        std::fs::write(&path, b"\xff\xff\xff\x00garbage").unwrap();
        assert!(Templates::open(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_full_partition_numbers_no_more_templates() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Templates::open(dir.path()).unwrap();
        t.limit(2);
        assert_eq!(t.number(&shape("one").unwrap().key), Some(0));
        assert_eq!(t.number(&shape("two").unwrap().key), Some(1));
        assert_eq!(t.number(&shape("three").unwrap().key), None);
        // Known templates keep their numbers.
        assert_eq!(t.number(&shape("one").unwrap().key), Some(0));
        // A damaged key is refused.
        assert_eq!(t.number(&[5, 1]), None);
    }

    #[test]
    fn a_failed_persist_is_written_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Templates::open(dir.path()).unwrap();
        t.number(&shape("one 1").unwrap().key);
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        assert!(t.persist().is_err());
        std::fs::remove_dir(dir.path().join(FILE)).unwrap();
        t.persist().unwrap();
        assert_eq!(Templates::open(dir.path()).unwrap().len(), 1);
    }
}
