//! Cutting plaintext at content-defined points (fastcdc v2020).

use fastcdc::v2020::FastCDC;

/// Minimum, average and maximum chunk sizes in bytes, validated by the
/// config layer against fastcdc's own bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkSizes {
    fn default() -> Self {
        ChunkSizes { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 }
    }
}

/// Cuts byte windows into chunks. A cut depends only on the bytes since the
/// previous cut, so re-cutting from a known cut point reproduces the old
/// boundaries wherever the bytes did not change.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    sizes: ChunkSizes,
}

impl Chunker {
    pub fn new(sizes: ChunkSizes) -> Chunker {
        Chunker { sizes }
    }

    pub fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    /// The lengths of the chunks `window` cuts into, in order. The last one
    /// ends at the end of the window whether or not that is a natural cut;
    /// callers that have more bytes after the window treat it as provisional.
    pub fn cut_lengths(&self, window: &[u8]) -> Vec<usize> {
        if window.is_empty() {
            return Vec::new();
        }
        let s = self.sizes;
        FastCDC::new(window, s.min as usize, s.avg as usize, s.max as usize).map(|c| c.length).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::data;

    #[test]
    fn small_input_is_one_chunk_and_sizes_hold() {
        let c = Chunker::new(ChunkSizes::default());
        assert_eq!(c.cut_lengths(&[]), Vec::<usize>::new());
        assert_eq!(c.cut_lengths(&[7u8; 1000]), vec![1000]);
        let d = data(20 << 20, 3);
        let lens = c.cut_lengths(&d);
        assert_eq!(lens.iter().sum::<usize>(), d.len());
        for l in &lens[..lens.len() - 1] {
            assert!(*l >= 256 * 1024 && *l <= 4 * 1024 * 1024, "{l}");
        }
    }

    #[test]
    fn recutting_from_a_cut_point_reproduces_boundaries() {
        let c = Chunker::new(ChunkSizes::default());
        let d = data(16 << 20, 9);
        let lens = c.cut_lengths(&d);
        let first = lens[0];
        let again = c.cut_lengths(&d[first..]);
        assert_eq!(&again[..], &lens[1..]);
    }
}
