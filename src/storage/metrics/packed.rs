//! A series' label set packed into one allocation, and the registry that
//! finds a series id by its labels without a second copy of them.
//!
//! A `Vec<(String, String)>` costs a vector plus two allocations per label
//! (about 500 bytes for five labels); packed, the same set takes its text
//! plus a length byte per string.

use hashbrown::HashTable;

use crate::model::Labels;

/// Label pairs as `len name len value …` (varint lengths), sorted as given.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct PackedLabels(Box<[u8]>);

impl PackedLabels {
    pub fn pack(labels: &Labels) -> Self {
        let n: usize = labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut b = Vec::with_capacity(n);
        for (k, v) in labels {
            put(&mut b, k);
            put(&mut b, v);
        }
        PackedLabels(b.into_boxed_slice())
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        // Written from `&str` by `pack`, so always valid.
        let s = |b| std::str::from_utf8(b).unwrap_or_default();
        self.raw().map(move |(k, v)| (s(k), s(v)))
    }

    /// The pairs as bytes: what lookups compare, without UTF-8 checks.
    fn raw(&self) -> Pairs<'_> {
        Pairs(&self.0)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw()
            .find(|(k, _)| *k == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn unpack(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Same pairs in the same order.
    pub fn equals(&self, labels: &Labels) -> bool {
        let mut it = self.raw();
        labels
            .iter()
            .all(|(k, v)| it.next() == Some((k.as_bytes(), v.as_bytes())))
            && it.next().is_none()
    }

    pub fn hash(&self) -> u64 {
        super::guard::pairs_hash(self.raw())
    }
}

fn put(b: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend_from_slice(s.as_bytes());
}

/// The label pairs of a [`PackedLabels`].
pub(super) struct Pairs<'a>(&'a [u8]);

impl<'a> Pairs<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let (mut n, mut shift, mut i) = (0usize, 0, 0);
        loop {
            let b = *self.0.get(i)?;
            n |= ((b & 0x7f) as usize) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let s = self.0.get(i..i + n)?;
        self.0 = &self.0[i + n..];
        Some(s)
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some((self.string()?, self.string()?))
    }
}

/// Series ids by label set; the labels themselves live in the caller's
/// series table, looked up through `labels_of`.
#[derive(Default)]
pub(super) struct SeriesIds {
    table: HashTable<u32>,
}

impl SeriesIds {
    pub fn find<'a>(
        &self,
        labels: &Labels,
        hash: u64,
        labels_of: impl Fn(u32) -> &'a PackedLabels,
    ) -> Option<u32> {
        self.table
            .find(hash, |id| labels_of(*id).equals(labels))
            .copied()
    }

    pub fn insert<'a>(&mut self, id: u32, hash: u64, labels_of: impl Fn(u32) -> &'a PackedLabels) {
        self.table
            .insert_unique(hash, id, |id| labels_of(*id).hash());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_round_trip_and_look_up() {
        let long = "x".repeat(300);
        for labels in [
            l(&[]),
            l(&[("__name__", "up")]),
            l(&[
                ("__name__", "http_requests_total"),
                ("code", "200"),
                ("", ""),
            ]),
            l(&[("a", &long), ("ünï", "cødé"), ("b", "")]),
        ] {
            let p = PackedLabels::pack(&labels);
            assert_eq!(p.unpack(), labels);
            assert!(p.equals(&labels));
            assert_eq!(p.hash(), super::super::guard::labels_hash(&labels));
            for (k, v) in &labels {
                assert_eq!(p.get(k), Some(v.as_str()));
            }
            assert_eq!(p.get("missing"), None);
        }
        let a = PackedLabels::pack(&l(&[("a", "1"), ("b", "2")]));
        assert!(!a.equals(&l(&[("a", "1")])));
        assert!(!a.equals(&l(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!a.equals(&l(&[("a", "12"), ("b", "")])));
    }

    #[test]
    fn ids_are_found_by_labels() {
        let sets: Vec<Labels> = (0..1000)
            .map(|i| l(&[("__name__", "m"), ("i", &i.to_string())]))
            .collect();
        let packed: Vec<PackedLabels> = sets.iter().map(PackedLabels::pack).collect();
        let mut ids = SeriesIds::default();
        for (i, p) in packed.iter().enumerate() {
            ids.insert(i as u32, p.hash(), |id| &packed[id as usize]);
        }
        for (i, s) in sets.iter().enumerate() {
            let h = super::super::guard::labels_hash(s);
            assert_eq!(ids.find(s, h, |id| &packed[id as usize]), Some(i as u32));
        }
        let other = l(&[("__name__", "m"), ("i", "1000")]);
        let h = super::super::guard::labels_hash(&other);
        assert_eq!(ids.find(&other, h, |id| &packed[id as usize]), None);
    }
}
