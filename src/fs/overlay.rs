//! Bytes written to an open file and not yet cut into chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Non-overlapping, non-adjacent dirty ranges of one file, keyed by start.
#[derive(Default, Debug)]
pub struct Overlay {
    ranges: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    /// The drive-wide count of dirty bytes this overlay adds to.
    total: Option<Arc<AtomicUsize>>,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let held = self.bytes;
        self.shrink(held);
    }
}

impl Overlay {
    /// An overlay whose bytes also count in `total`.
    pub fn counted(total: Arc<AtomicUsize>) -> Overlay {
        Overlay { ranges: BTreeMap::new(), bytes: 0, total: Some(total) }
    }

    fn grow(&mut self, n: usize) {
        self.bytes += n;
        if let Some(t) = &self.total {
            t.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn shrink(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(t) = &self.total {
            t.fetch_sub(n, Ordering::Relaxed);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records `data` at `off`, replacing what was there. Appending to the
    /// end of a range extends it in place (the common sequential case).
    pub fn insert(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        // Every range that overlaps or touches [off, end].
        let touching: Vec<u64> =
            self.ranges.range(..=end).rev().take_while(|(s, v)| **s + v.len() as u64 >= off).map(|(s, _)| *s).collect();
        let Some(&base_start) = touching.last() else {
            self.grow(data.len());
            self.ranges.insert(off, data.to_vec());
            return;
        };
        let new_start = base_start.min(off);
        let mut new_end = end;
        for s in &touching {
            new_end = new_end.max(s + self.ranges[s].len() as u64);
        }
        let mut buf = if base_start == new_start {
            let v = self.ranges.remove(&base_start).unwrap_or_default();
            self.shrink(v.len());
            v
        } else {
            Vec::new()
        };
        buf.resize((new_end - new_start) as usize, 0);
        for s in &touching {
            if let Some(v) = self.ranges.remove(s) {
                self.shrink(v.len());
                let at = (s - new_start) as usize;
                buf[at..at + v.len()].copy_from_slice(&v);
            }
        }
        let at = (off - new_start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        self.grow(buf.len());
        self.ranges.insert(new_start, buf);
    }

    /// Copies the dirty bytes that fall in `[off, off + buf.len())` into `buf`.
    pub fn read_into(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        let first = self.ranges.range(..=off).next_back().map_or(off, |(s, _)| *s);
        for (s, v) in self.ranges.range(first..end) {
            let a = (*s).max(off);
            let b = (s + v.len() as u64).min(end);
            if a < b {
                buf[(a - off) as usize..(b - off) as usize].copy_from_slice(&v[(a - s) as usize..(b - s) as usize]);
            }
        }
    }

    /// True when any dirty byte falls in `[off, end)`.
    pub fn overlaps(&self, off: u64, end: u64) -> bool {
        let first = self.ranges.range(..=off).next_back().map_or(off, |(s, _)| *s);
        self.ranges.range(first..end).any(|(s, v)| s + v.len() as u64 > off)
    }

    /// The dirty bytes of `[off, end)` when one range holds all of them.
    pub fn contiguous(&self, off: u64, end: u64) -> Option<&[u8]> {
        let (s, v) = self.ranges.range(..=off).next_back()?;
        let e = s + v.len() as u64;
        (end <= e).then(|| &v[(off - s) as usize..(end - s) as usize])
    }

    /// The only dirty range, when there is exactly one: (start, length).
    pub fn single_range(&self) -> Option<(u64, usize)> {
        if self.ranges.len() != 1 {
            return None;
        }
        self.ranges.iter().next().map(|(s, v)| (*s, v.len()))
    }

    /// Removes the range starting at `start` and hands over its bytes.
    pub fn take(&mut self, start: u64) -> Option<Vec<u8>> {
        let v = self.ranges.remove(&start)?;
        self.shrink(v.len());
        Some(v)
    }

    /// Puts back bytes at `start` where no dirty range lies (after `take`).
    pub fn put(&mut self, start: u64, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.overlaps(start, start + bytes.len() as u64) {
            self.insert(start, &bytes);
            return;
        }
        self.grow(bytes.len());
        self.ranges.insert(start, bytes);
    }

    /// Forgets the dirty bytes in `[start, end)`.
    pub fn remove_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = self.ranges.range(..=start).next_back().map_or(start, |(s, _)| *s);
        let hit: Vec<u64> = self.ranges.range(first..end).map(|(s, _)| *s).collect();
        for s in hit {
            let Some(v) = self.ranges.remove(&s) else { continue };
            self.shrink(v.len());
            let e = s + v.len() as u64;
            if e <= start {
                // Entirely before the range: keep it.
                self.grow(v.len());
                self.ranges.insert(s, v);
                continue;
            }
            if s < start {
                let head = v[..(start - s) as usize].to_vec();
                self.grow(head.len());
                self.ranges.insert(s, head);
            }
            if e > end {
                let tail = v[(end - s) as usize..].to_vec();
                self.grow(tail.len());
                self.ranges.insert(end, tail);
            }
        }
    }

    /// Groups of dirty ranges, merging ranges closer than `gap` bytes.
    pub fn clusters(&self, gap: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, v) in &self.ranges {
            let e = s + v.len() as u64;
            match out.last_mut() {
                Some(last) if *s <= last.1 + gap => last.1 = last.1.max(e),
                _ => out.push((*s, e)),
            }
        }
        out
    }
}

/// A set of byte ranges, merged where they touch: which dirty bytes an
/// fsync has not put in the journal yet.
#[derive(Default, Debug)]
pub struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    pub fn from_ranges(ranges: &[(u64, u64)]) -> Ranges {
        let mut r = Ranges::default();
        ranges.iter().for_each(|&(a, b)| r.insert(a, b));
        r
    }

    /// Adds `[start, end)`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut a, mut b) = (start, end);
        let first = self.0.range(..=start).next_back().filter(|(_, e)| **e >= start).map_or(start, |(s, _)| *s);
        let hit: Vec<(u64, u64)> = self.0.range(first..=end).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in hit {
            self.0.remove(&s);
            a = a.min(s);
            b = b.max(e);
        }
        self.0.insert(a, b);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The parts of `ranges` (sorted, disjoint) that lie in this set.
    pub fn intersect(&self, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(a, b) in ranges {
            let first = self.0.range(..=a).next_back().map_or(a, |(s, _)| *s);
            for (&s, &e) in self.0.range(first..b) {
                let (x, y) = (s.max(a), e.min(b));
                if x < y {
                    out.push((x, y));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(o: &Overlay, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        o.read_into(off, &mut b);
        b
    }

    #[test]
    fn inserts_merge_and_overwrite() {
        let mut o = Overlay::default();
        o.insert(10, b"abc");
        o.insert(13, b"def");
        assert_eq!(o.clusters(0), vec![(10, 16)]);
        o.insert(0, b"xy");
        o.insert(11, b"Z");
        assert_eq!(read(&o, 0, 16), b"xy\0\0\0\0\0\0\0\0aZcdef");
        o.insert(1, &[b'q'; 12]);
        assert_eq!(read(&o, 0, 16), b"xqqqqqqqqqqqqdef");
        assert_eq!(o.bytes(), 16);
        assert_eq!(o.clusters(0), vec![(0, 16)]);
        assert_eq!(o.contiguous(2, 5), Some(&b"qqq"[..]));
        assert_eq!(o.contiguous(10, 17), None);
        assert!(o.overlaps(15, 20) && !o.overlaps(16, 20));
    }

    #[test]
    fn ranges_merge_and_intersect() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        r.insert(5, 6);
        assert_eq!(r.intersect(&[(0, 100)]), vec![(5, 6), (10, 25), (30, 40)]);
        r.insert(24, 31);
        assert_eq!(r.intersect(&[(0, 100)]), vec![(5, 6), (10, 40)]);
        assert_eq!(r.intersect(&[(0, 12), (15, 16), (39, 50)]), vec![(5, 6), (10, 12), (15, 16), (39, 40)]);
        assert_eq!(r.intersect(&[(6, 10), (40, 41)]), vec![]);
        r.clear();
        assert_eq!(r.intersect(&[(0, 100)]), vec![]);
    }

    #[test]
    fn remove_and_truncate_split_ranges() {
        let mut o = Overlay::default();
        o.insert(0, b"0123456789");
        o.remove_range(3, 5);
        assert_eq!(o.clusters(0), vec![(0, 3), (5, 10)]);
        assert_eq!(o.bytes(), 8);
        o.remove_range(7, u64::MAX);
        assert_eq!(o.clusters(0), vec![(0, 3), (5, 7)]);
        assert_eq!(read(&o, 0, 10), b"012\x00\x0056\x00\x00\x00");
        assert_eq!(o.clusters(2), vec![(0, 7)]);
        o.remove_range(0, 100);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }
}
