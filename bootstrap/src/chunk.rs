//! Reading one chunk: its compressed bytes through the hash and the zstd decoder, its
//! tar stream checked member by member against the plan the manifest gives.
//!
//! Extraction and `coldpack verify` both read chunks this way and differ only in what
//! they do with each piece's bytes, which they pass in as a closure.

use std::io::{self, BufReader, Read};

use crate::error::{Error, Result};
use crate::manifest::{Entry, Manifest, Piece};
use crate::payload::Payload;

/// Largest zstd window a chunk may ask for (8 MiB). Each decoding thread holds one
/// window, so this, times the threads, bounds the bootstrap's memory; a frame that
/// asks for more is refused instead of being allowed to allocate it.
pub const WINDOW_LOG_MAX: u32 = 23;

/// Why a chunk failed: its bytes (the payload's fault) or what was done with them.
pub enum ChunkError {
    Read(io::Error),
    Write(Error),
}

/// Streams chunk `index` (at `start` in the chunks region) and hands each of its
/// `pieces` to `sink` with a reader of exactly that piece's bytes.
pub fn read_pieces(
    payload: &Payload,
    manifest: &Manifest,
    index: usize,
    start: u64,
    pieces: &[Piece],
    mut sink: impl FnMut(&Entry, &Piece, &mut dyn Read) -> std::result::Result<(), ChunkError>,
) -> Result<()> {
    let chunk = &manifest.chunks[index];
    let mut reader = payload.chunk_reader(start, chunk.compressed_len);
    let outcome = decode(&mut reader, manifest, pieces, &mut sink);
    // The hash verdict comes first: a damaged chunk usually also fails to decode, and
    // "does not match its SHA-256" is the truer reason.
    let hashed = reader.finish(&chunk.sha256);
    let damaged = |e: io::Error| {
        Error::corrupt(format!(
            "chunk {index} of the payload is damaged ({e}): deploy the file again"
        ))
    };
    match (outcome, hashed) {
        (Err(ChunkError::Write(e)), _) => Err(e),
        (_, Err(e)) | (Err(ChunkError::Read(e)), Ok(())) => Err(damaged(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn decode(
    reader: &mut impl Read,
    manifest: &Manifest,
    pieces: &[Piece],
    sink: &mut impl FnMut(&Entry, &Piece, &mut dyn Read) -> std::result::Result<(), ChunkError>,
) -> std::result::Result<(), ChunkError> {
    let read = ChunkError::Read;
    let invalid = |what: String| ChunkError::Read(io::Error::new(io::ErrorKind::InvalidData, what));
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(128 * 1024, reader))
            .map_err(read)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(read)?;
    let mut archive = tar::Archive::new(decoder.single_frame());
    let mut members = archive.entries().map_err(read)?;
    for piece in pieces {
        let entry = &manifest.entries[piece.entry];
        let listed = String::from_utf8_lossy(&entry.path);
        let mut member = match members.next() {
            Some(member) => member.map_err(read)?,
            None => {
                return Err(invalid(format!(
                    "its archive ends where the manifest lists {listed:?}"
                )))
            }
        };
        if member.header().entry_type() != tar::EntryType::Regular
            || member.path_bytes().as_ref() != entry.path.as_slice()
            || member.size() != piece.len
        {
            return Err(invalid(format!(
                "its archive disagrees with the manifest at {listed:?}"
            )));
        }
        let mut counted = Counted {
            inner: &mut member,
            n: 0,
        };
        sink(entry, piece, &mut counted)?;
        // The sink must take the whole piece, and the archive must hold all of it.
        if counted.n != piece.len || io::copy(&mut member, &mut io::sink()).map_err(read)? != 0 {
            return Err(invalid(format!(
                "its archive holds a short member for {listed:?}"
            )));
        }
    }
    if members.next().is_some() {
        return Err(invalid(
            "its archive has members the manifest does not list".into(),
        ));
    }
    Ok(())
}

/// Counts the bytes a sink reads, so a truncated member cannot pass for a whole one.
struct Counted<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
