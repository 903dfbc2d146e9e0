//! What extraction costs the bootstrap: the one model that both the cutting of chunks
//! (equal work per chunk) and the choice of the task part (most work saved per byte of
//! code storage) use.
//!
//! Measured on the benchmark's corpora (ext4 with a journal, one core): about 27 us to
//! create a file and 2.4 ns per byte decoded and written; a directory costs about as
//! much as a file.

const NS_PER_ENTRY: u64 = 27_000;
const PS_PER_BYTE: u64 = 2_400;

/// A file's creation in bytes' worth of decoding and writing.
pub const ENTRY_BYTES: u64 = NS_PER_ENTRY * 1000 / PS_PER_BYTE;

/// Nanoseconds a start spends creating `entries` entries holding `bytes` bytes.
pub fn nanos(entries: u64, bytes: u64) -> u64 {
    entries * NS_PER_ENTRY + bytes * PS_PER_BYTE / 1000
}
