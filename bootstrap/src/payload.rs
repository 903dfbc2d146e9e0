//! Where the payload sits and how its bytes are trusted.
//!
//! `coldpack pack` appends the payload to a copy of the stock bootstrap and ends the
//! file with a fixed-size trailer, so one read-only file in `/var/task` carries both
//! the program and the exact hash it must find:
//!
//! ```text
//! [bootstrap ELF][header][launch][manifest][chunk 0][chunk 1]...[trailer]
//! header  (128 bytes): magic, format version, section lengths, SHA-256 of launch and manifest
//! trailer  (56 bytes): payload offset, payload length, SHA-256 of the header, magic
//! ```
//!
//! The hashes form a chain: the trailer names the header's hash, the header the launch
//! section's and the manifest's, the manifest each chunk's. A start checks only what it
//! reads: a warm start with a completion marker reads the header and the launch section
//! (a few hundred bytes); a cold start checks each chunk as it streams through its
//! thread's decoder. No byte is acted on before the hash that covers it has been
//! checked, except chunk contents, which are written into a private staging directory
//! that is discarded if their chunk's hash then fails.
//!
//! The SHA-256 of the header is the payload's identity: it names the cache entry and
//! the completion marker.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Launch, Manifest};
use crate::wire::{Reader, Writer};

pub const HEADER_MAGIC: [u8; 8] = *b"COLDPACK";
pub const TRAILER_MAGIC: [u8; 8] = *b"CPTRAIL1";
/// Bumped on any change a bootstrap of the previous version could misread.
pub const FORMAT_VERSION: u32 = 2;
pub const HEADER_LEN: usize = 128;
pub const TRAILER_LEN: usize = 56;

/// Fixed-size description of the sections that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub launch_len: u64,
    pub manifest_len: u64,
    pub chunks_len: u64,
    pub launch_sha256: [u8; 32],
    pub manifest_sha256: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::default();
        w.raw(&HEADER_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0); // flags, none defined yet
        w.u64(self.launch_len);
        w.u64(self.manifest_len);
        w.u64(self.chunks_len);
        w.raw(&self.launch_sha256);
        w.raw(&self.manifest_sha256);
        let mut out = [0; HEADER_LEN];
        out[..w.bytes.len()].copy_from_slice(&w.bytes);
        out
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header> {
        let mut r = Reader::new(bytes, "header");
        if r.array::<8>()? != HEADER_MAGIC {
            return Err(Error::corrupt("payload header has the wrong magic bytes"));
        }
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::PayloadUnsupported,
                format!(
                    "payload format version {version}, but this bootstrap reads version \
                     {FORMAT_VERSION}: pack again with a coldpack of the same release"
                ),
            ));
        }
        if r.u32()? != 0 {
            return Err(Error::corrupt("payload header sets unknown flags"));
        }
        Ok(Header {
            launch_len: r.u64()?,
            manifest_len: r.u64()?,
            chunks_len: r.u64()?,
            launch_sha256: r.array()?,
            manifest_sha256: r.array()?,
        })
    }

    /// Total payload length, header included; `None` if the lengths overflow.
    fn payload_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(self.launch_len)?
            .checked_add(self.manifest_len)?
            .checked_add(self.chunks_len)
    }
}

/// The end of a packed bootstrap: where its payload is and which hash it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub offset: u64,
    pub len: u64,
    pub header_sha256: [u8; 32],
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut w = Writer::default();
        w.u64(self.offset);
        w.u64(self.len);
        w.raw(&self.header_sha256);
        w.raw(&TRAILER_MAGIC);
        w.bytes
            .try_into()
            .expect("trailer fields add up to TRAILER_LEN")
    }

    /// Reads the trailer at the end of `file`; `Ok(None)` when the file has none
    /// (a stock bootstrap that was never packed).
    pub fn read(file: &File, file_len: u64, path: &Path) -> Result<Option<Trailer>> {
        if file_len < TRAILER_LEN as u64 {
            return Ok(None);
        }
        let mut bytes = [0; TRAILER_LEN];
        file.read_exact_at(&mut bytes, file_len - TRAILER_LEN as u64)
            .map_err(|e| Error::io(ErrorKind::PayloadMissing, "cannot read", path, e))?;
        let mut r = Reader::new(&bytes, "trailer");
        let offset = r.u64()?;
        let len = r.u64()?;
        let header_sha256 = r.array()?;
        if r.array::<8>()? != TRAILER_MAGIC {
            return Ok(None);
        }
        if offset.checked_add(len) != Some(file_len - TRAILER_LEN as u64) {
            return Err(Error::corrupt(format!(
                "payload trailer of {} points outside the file (truncated or appended to?)",
                path.display()
            )));
        }
        Ok(Some(Trailer {
            offset,
            len,
            header_sha256,
        }))
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An open payload whose header has been checked against the trailer's hash.
pub struct Payload {
    file: File,
    path: PathBuf,
    pub offset: u64,
    pub header: Header,
    /// SHA-256 of the header: the payload's identity.
    pub id: [u8; 32],
}

impl Payload {
    /// Opens the payload carried by the packed bootstrap at `path`.
    pub fn open(path: &Path) -> Result<Payload> {
        let missing =
            |what: &str, e: io::Error| Error::io(ErrorKind::PayloadMissing, what, path, e);
        let file = File::open(path).map_err(|e| missing("cannot open", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| missing("cannot stat", e))?
            .len();
        let trailer = Trailer::read(&file, file_len, path)?.ok_or_else(|| {
            Error::new(
                ErrorKind::PayloadMissing,
                format!(
                    "{} carries no coldpack payload: deploy the bootstrap that `coldpack pack` wrote",
                    path.display()
                ),
            )
        })?;
        let mut header_bytes = [0; HEADER_LEN];
        if trailer.len < HEADER_LEN as u64 {
            return Err(Error::corrupt("payload is shorter than its header"));
        }
        file.read_exact_at(&mut header_bytes, trailer.offset)
            .map_err(|e| missing("cannot read", e))?;
        if sha256(&header_bytes) != trailer.header_sha256 {
            return Err(Error::corrupt(format!(
                "payload header of {} does not match its SHA-256: the file is damaged, deploy it again",
                path.display()
            )));
        }
        let header = Header::decode(&header_bytes)?;
        if header.payload_len() != Some(trailer.len) {
            return Err(Error::corrupt("payload section lengths do not add up"));
        }
        Ok(Payload {
            file,
            path: path.to_owned(),
            offset: trailer.offset,
            header,
            id: trailer.header_sha256,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the payload, header to last chunk.
    pub fn byte_len(&self) -> u64 {
        self.header.payload_len().unwrap_or(0)
    }

    /// Reads `len` bytes at `at` (relative to the payload) and checks their hash.
    fn section(&self, at: u64, len: u64, expected: &[u8; 32], what: &str) -> Result<Vec<u8>> {
        // A section longer than the payload was already refused by `open`, so this
        // allocation is bounded by the file's real size.
        let mut bytes = vec![0; len as usize];
        self.file
            .read_exact_at(&mut bytes, self.offset + at)
            .map_err(|e| Error::io(ErrorKind::PayloadMissing, "cannot read", &self.path, e))?;
        if &sha256(&bytes) != expected {
            return Err(Error::corrupt(format!(
                "payload {what} does not match its SHA-256: the file is damaged, deploy it again"
            )));
        }
        Ok(bytes)
    }

    pub fn launch(&self) -> Result<Launch> {
        let h = &self.header;
        let bytes = self.section(
            HEADER_LEN as u64,
            h.launch_len,
            &h.launch_sha256,
            "launch section",
        )?;
        Launch::decode(&bytes)
    }

    pub fn manifest(&self) -> Result<Manifest> {
        let h = &self.header;
        let at = HEADER_LEN as u64 + h.launch_len;
        let bytes = self.section(at, h.manifest_len, &h.manifest_sha256, "manifest")?;
        let manifest = Manifest::decode(&inflate_manifest(bytes)?)?;
        let chunks_len = manifest
            .chunks
            .iter()
            .try_fold(0u64, |sum, c| sum.checked_add(c.compressed_len));
        if chunks_len != Some(h.chunks_len) {
            return Err(Error::corrupt(
                "manifest chunk sizes do not match the payload's length",
            ));
        }
        Ok(manifest)
    }

    /// Offset of the chunks region within the payload.
    fn chunks_at(&self) -> u64 {
        HEADER_LEN as u64 + self.header.launch_len + self.header.manifest_len
    }

    /// A reader of one chunk's compressed bytes that hashes them as they pass.
    /// `start` is the chunk's offset within the chunks region.
    pub fn chunk_reader(&self, start: u64, len: u64) -> ChunkReader<'_> {
        ChunkReader {
            file: &self.file,
            pos: self.offset + self.chunks_at() + start,
            left: len,
            hasher: Sha256::new(),
        }
    }
}

/// zstd's frame magic number, as the first four bytes of a section.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Largest manifest the bootstrap will inflate: about half a million entries.
const MAX_MANIFEST: u64 = 64 << 20;

/// The packer stores the manifest as one zstd frame: its paths compress about tenfold
/// and, raw, they would make the payload several percent larger than `tar | zstd` of
/// the same tree. A raw manifest is still read, told apart by zstd's magic number,
/// which no raw manifest can start with (it would claim four billion entries).
pub fn deflate_manifest(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, level)
}

fn inflate_manifest(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(bytes);
    }
    // The frame states its size; anything without one, or too large, is refused
    // before a byte is allocated for it.
    let size = match zstd::zstd_safe::get_frame_content_size(&bytes) {
        Ok(Some(size)) if size <= MAX_MANIFEST => size as usize,
        _ => return Err(Error::corrupt("payload manifest has no usable size")),
    };
    let raw = zstd::bulk::decompress(&bytes, size)
        .map_err(|e| Error::corrupt(format!("payload manifest does not decompress: {e}")))?;
    if raw.len() != size {
        return Err(Error::corrupt("payload manifest is shorter than it claims"));
    }
    Ok(raw)
}

/// Streams a chunk's compressed bytes with `pread`, so that threads share one file
/// descriptor, and hashes every byte it hands out.
pub struct ChunkReader<'a> {
    file: &'a File,
    pos: u64,
    left: u64,
    hasher: Sha256,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

impl ChunkReader<'_> {
    /// Reads whatever the decoder left unread and checks the hash of the whole chunk.
    pub fn finish(mut self, expected: &[u8; 32]) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        if self.hasher.finalize().as_slice() != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk does not match its SHA-256",
            ));
        }
        Ok(())
    }
}
