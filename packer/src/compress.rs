//! Cutting the data stream into chunks and compressing them, on every core.
//!
//! Chunks are cut at equal estimated extraction work (see `work`), in sets that 1, 2
//! or 3 decoding threads share evenly, and each is compressed on its own with
//! `chunk::encode`, the format's one encoder, so that the bootstrap can decode them on
//! several threads.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use coldpack_bootstrap::chunk;
use coldpack_bootstrap::manifest::{self, Chunk, Entry, EntryKind, Plan};
use sha2::{Digest, Sha256};

use crate::parallel_map;
use crate::work::ENTRY_BYTES;

/// Chunk counts are multiples of this, so that 1, 2 or 3 decoding threads each get
/// the same share of the chunks and no core finishes alone with the last one. The
/// bootstrap's memory budget allows two today (docs/design.md, "The cold path"); six
/// keeps a third possible without cutting payloads differently.
const CHUNK_SET: u64 = 6;
/// Data-stream bytes per chunk, at least and (on average) at most. Every chunk restarts
/// zstd's window, which costs ratio on trees of many similar files (on the benchmark's
/// `node_modules`-like tree at level 9: 3% with 8 MiB chunks, 0.5% with 32 MiB); the
/// decoder's window is capped at 8 MiB whatever the chunk size, so memory does not
/// grow with it.
const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 32 << 20;

/// Cuts the data stream, the contents of files of these `sizes` in order, into
/// chunks of equal work, as many as [`CHUNK_SET`] and [`MAX_CHUNK`] ask for, or fewer
/// of at least [`MIN_CHUNK`] for a small tree.
pub fn chunk_lengths(sizes: &[u64]) -> Vec<u64> {
    let total: u64 = sizes.iter().sum();
    let count = if total < CHUNK_SET * MIN_CHUNK {
        total.div_ceil(MIN_CHUNK)
    } else {
        CHUNK_SET * total.div_ceil(CHUNK_SET * MAX_CHUNK)
    };
    let work = u128::from(total) + u128::from(ENTRY_BYTES) * sizes.len() as u128;
    let boundary = |n: u64| work * u128::from(n) / u128::from(count.max(1));
    let mut cuts = vec![0];
    let (mut done_work, mut done_bytes, mut next) = (0u128, 0u64, 1);
    for &size in sizes {
        let content_at = done_work + u128::from(ENTRY_BYTES);
        let end = content_at + u128::from(size);
        while next < count && boundary(next) < end {
            let into = boundary(next).saturating_sub(content_at) as u64;
            cuts.push(done_bytes + into);
            next += 1;
        }
        (done_work, done_bytes) = (end, done_bytes + size);
    }
    cuts.push(total);
    cuts.dedup();
    // Equal work can still leave one chunk over the format's limit (a large file
    // after many small ones): cut it again.
    cuts.windows(2)
        .flat_map(|w| {
            let len = w[1] - w[0];
            let pieces = len.div_ceil(manifest::MAX_CHUNK_DATA);
            (0..pieces).map(move |i| len * (i + 1) / pieces - len * i / pieces)
        })
        .collect()
}

/// The chunk table for `tree`, sizes only: what [`compress`] fills in.
pub fn plan_chunks(tree: &[Entry]) -> Vec<Chunk> {
    let sizes: Vec<u64> = tree
        .iter()
        .map(Entry::file_size)
        .filter(|&size| size > 0)
        .collect();
    chunk_lengths(&sizes)
        .into_iter()
        .map(|data_len| Chunk {
            data_len,
            compressed_len: 0,
            sha256: [0; 32],
            data_sha256: [0; 32],
        })
        .collect()
}

/// Compresses every chunk `plan` cuts from the tree read from `sources`, largest
/// first so that no core is left with a long one at the end; fills in the chunk table
/// and returns the frames in order.
pub fn compress(
    plan: &Plan,
    mut chunks: Vec<Chunk>,
    sources: &[PathBuf],
    level: i32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<Chunk>, Vec<Vec<u8>>)> {
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(chunks[i].data_len));
    let done = parallel_map(order.len(), |job| {
        let index = order[job];
        let mut data = Vec::with_capacity(chunks[index].data_len as usize);
        for piece in plan.chunk(index) {
            let source = &sources[piece.entry];
            let start = data.len();
            data.resize(start + piece.len as usize, 0);
            File::open(source)
                .and_then(|file| file.read_exact_at(&mut data[start..], piece.offset))
                .with_context(|| {
                    format!(
                        "cannot read {} (did it change while packing?)",
                        source.display()
                    )
                })?;
        }
        let frame = chunk::encode(&data, level)?;
        progress(data.len() as u64);
        Ok((index, frame, <[u8; 32]>::from(Sha256::digest(&data))))
    })?;
    let mut frames = vec![Vec::new(); chunks.len()];
    for (index, frame, data_sha256) in done {
        chunks[index].compressed_len = frame.len() as u64;
        chunks[index].sha256 = coldpack_bootstrap::payload::sha256(&frame);
        chunks[index].data_sha256 = data_sha256;
        frames[index] = frame;
    }
    Ok((chunks, frames))
}

/// What each of `files` would take compressed in the payload, estimated at zstd's
/// fastest level (which only overestimates the real one).
pub fn estimate(entries: &[Entry], sources: &[PathBuf], files: &[usize]) -> Result<Vec<u64>> {
    parallel_map(files.len(), |job| {
        let index = files[job];
        if !matches!(entries[index].kind, EntryKind::File { .. }) {
            return Ok(0);
        }
        let mut counted = Counter(0);
        let file = File::open(&sources[index])
            .with_context(|| format!("cannot read {}", sources[index].display()))?;
        zstd::stream::copy_encode(file, &mut counted, 1)
            .with_context(|| format!("cannot read {}", sources[index].display()))?;
        Ok(counted.0)
    })
}

/// Counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stream_in_sets_of_equal_work() {
        // Many small files then one large one: the small files' chunks are shorter.
        let mut sizes = vec![4 << 10; 20_000];
        sizes.push(200 << 20);
        let lengths = chunk_lengths(&sizes);
        assert_eq!(lengths.len() as u64 % CHUNK_SET, 0, "{lengths:?}");
        assert_eq!(lengths.iter().sum::<u64>(), sizes.iter().sum::<u64>());
        assert!(lengths
            .iter()
            .all(|&l| l > 0 && l <= manifest::MAX_CHUNK_DATA));
        assert!(lengths[0] < *lengths.last().unwrap() / 2, "{lengths:?}");
        let work = |range: std::ops::Range<u64>| {
            let mut at = 0;
            sizes
                .iter()
                .map(|&size| {
                    let (start, end) = (at, at + size);
                    at = end;
                    let inside = end.min(range.end).saturating_sub(start.max(range.start));
                    inside
                        + if range.contains(&start) {
                            ENTRY_BYTES
                        } else {
                            0
                        }
                })
                .sum::<u64>()
        };
        let mut at = 0;
        let shares: Vec<u64> = lengths
            .iter()
            .map(|&l| {
                at += l;
                work(at - l..at)
            })
            .collect();
        let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
        assert!(hi - lo <= ENTRY_BYTES + (4 << 10), "{shares:?}");
    }

    #[test]
    fn small_and_empty_streams() {
        assert!(chunk_lengths(&[]).is_empty());
        assert_eq!(chunk_lengths(&[1]), vec![1]);
        // One file is split at byte offsets: three ways under 6 MiB, six ways above.
        for (size, count) in [(3 << 20, 3), (60 << 20, 6)] {
            let lengths = chunk_lengths(&[size]);
            assert_eq!(lengths.len(), count);
            assert_eq!(lengths.iter().sum::<u64>(), size);
            let share = size / count as u64;
            assert!(
                lengths.iter().all(|&l| l.abs_diff(share) <= ENTRY_BYTES),
                "{lengths:?}"
            );
        }
    }

    #[test]
    fn no_chunk_exceeds_what_the_bootstrap_decodes() {
        let mut sizes = vec![1 << 10; 100_000];
        sizes.push(300 << 20);
        let lengths = chunk_lengths(&sizes);
        assert!(
            lengths.iter().all(|&l| l <= manifest::MAX_CHUNK_DATA),
            "{lengths:?}"
        );
        assert_eq!(lengths.iter().sum::<u64>(), sizes.iter().sum::<u64>());
    }
}
