//! Where the payload sits, how its bytes are trusted, and how one is assembled.
//!
//! `coldpack pack` appends the payload to a copy of the stock bootstrap and ends the
//! file with a fixed-size trailer, so one read-only file in `/var/task` carries both
//! the program and the exact hash it must find:
//!
//! ```text
//! [bootstrap ELF][header][launch][manifest][task index][chunk 0]...[chunk n-1][trailer]
//! header  (128 bytes): magic, format version, flags, section lengths,
//!                      SHA-256 of the launch section and of the manifest
//! trailer  (56 bytes): payload offset, payload length, SHA-256 of the header, magic
//! ```
//!
//! The hashes form a chain: the trailer names the header's hash, the header the launch
//! section's and the manifest's, the manifest the task index's and each chunk's. A
//! start checks only what it reads: a warm start at `COLDPACK_VERIFY=marker` reads the
//! header and the launch section (a few hundred bytes), at `stat` and `full` the
//! manifest too; a cold start checks each chunk
//! as it streams through its thread's decoder. No byte is acted on before the hash
//! that covers it has been checked, except chunk contents, which are written into a
//! private staging directory that is discarded if their chunk's hash then fails.
//!
//! The SHA-256 of the header is the payload's identity: it names the cache entry, the
//! completion marker and the task part. [`Assembly`] is the one place that lays a
//! payload out; the packer, the tests and the fuzzers all call it.
//! docs/design.md describes the format in full.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::launch::Launch;
use crate::manifest::{Manifest, MAX_MANIFEST};
use crate::task::TaskIndex;
use crate::wire::{Reader, Writer};

pub const HEADER_MAGIC: [u8; 8] = *b"COLDPACK";
pub const TRAILER_MAGIC: [u8; 8] = *b"CPTRAIL1";
/// Bumped on any change a bootstrap of the previous version could misread.
pub const FORMAT_VERSION: u32 = 3;
pub const HEADER_LEN: usize = 128;
pub const TRAILER_LEN: usize = 56;
/// Header flag: the whole tree is kept in the task part, nothing goes to the cache.
pub const FLAG_DIRECT: u32 = 1;
/// Largest task index the tools will inflate; the bootstrap never reads it at start.
const MAX_TASK_INDEX: u64 = 256 << 20;

/// Fixed-size description of the sections that follow it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u32,
    pub launch_len: u64,
    pub manifest_len: u64,
    pub task_index_len: u64,
    pub chunks_len: u64,
    pub launch_sha256: [u8; 32],
    pub manifest_sha256: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::default();
        w.raw(&HEADER_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(self.flags);
        w.u64(self.launch_len);
        w.u64(self.manifest_len);
        w.u64(self.task_index_len);
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
        let header = Header {
            flags: r.u32()?,
            launch_len: r.u64()?,
            manifest_len: r.u64()?,
            task_index_len: r.u64()?,
            chunks_len: r.u64()?,
            launch_sha256: r.array()?,
            manifest_sha256: r.array()?,
        };
        if header.flags & !FLAG_DIRECT != 0 || r.raw(r.left())?.iter().any(|&b| b != 0) {
            return Err(Error::corrupt("payload header sets unknown flags"));
        }
        Ok(header)
    }

    /// Total payload length, header included; `None` if the lengths overflow.
    fn payload_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(self.launch_len)?
            .checked_add(self.manifest_len)?
            .checked_add(self.task_index_len)?
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
        let mut out = [0; TRAILER_LEN];
        out.copy_from_slice(&w.bytes);
        out
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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// The sections of a payload, as the packer (or a test) has built them.
pub struct Sections<'a> {
    pub flags: u32,
    pub launch: &'a [u8],
    /// The manifest and the task index, each compressed with [`deflate_section`].
    pub manifest: &'a [u8],
    pub task_index: &'a [u8],
    /// Each chunk's zstd frame, in order.
    pub chunks: &'a [Vec<u8>],
}

/// A stock bootstrap and the sections laid out after it: the bytes of a packed
/// bootstrap, in order, and the payload's identity.
pub struct Assembly<'a> {
    stock: &'a [u8],
    sections: Sections<'a>,
    header: [u8; HEADER_LEN],
    trailer: [u8; TRAILER_LEN],
    pub id: [u8; 32],
}

impl<'a> Assembly<'a> {
    pub fn new(stock: &'a [u8], sections: Sections<'a>) -> Assembly<'a> {
        let header = Header {
            flags: sections.flags,
            launch_len: sections.launch.len() as u64,
            manifest_len: sections.manifest.len() as u64,
            task_index_len: sections.task_index.len() as u64,
            chunks_len: sections.chunks.iter().map(|c| c.len() as u64).sum(),
            launch_sha256: sha256(sections.launch),
            manifest_sha256: sha256(sections.manifest),
        };
        let payload_len = header.payload_len().unwrap_or(u64::MAX);
        let header = header.encode();
        let id = sha256(&header);
        let trailer = Trailer {
            offset: stock.len() as u64,
            len: payload_len,
            header_sha256: id,
        }
        .encode();
        Assembly {
            stock,
            sections,
            header,
            trailer,
            id,
        }
    }

    /// The file's bytes, piece by piece.
    pub fn parts(&self) -> Vec<&[u8]> {
        let s = &self.sections;
        let mut parts = vec![
            self.stock,
            &self.header[..],
            s.launch,
            s.manifest,
            s.task_index,
        ];
        parts.extend(s.chunks.iter().map(Vec::as_slice));
        parts.push(&self.trailer);
        parts
    }

    /// The packed bootstrap's length.
    pub fn len(&self) -> u64 {
        self.parts().iter().map(|p| p.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The payload's length, header to last chunk.
    pub fn payload_len(&self) -> u64 {
        self.len() - self.stock.len() as u64 - TRAILER_LEN as u64
    }

    /// The whole packed bootstrap in memory, for tests and fuzzers.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// zstd's frame magic number, as the first four bytes of a compressed section.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Compresses the manifest or the task index: their names and columns compress about
/// tenfold, and raw they would make the payload several percent larger than
/// `tar | zstd` of the same tree.
pub fn deflate_section(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, level)
}

/// Inflates a section stored as one zstd frame, refusing before allocating anything
/// a frame that states no size or more than `max` bytes.
fn inflate_section(bytes: &[u8], max: u64, what: &str) -> Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if bytes.starts_with(&ZSTD_MAGIC) && size <= max => size as usize,
        _ => return Err(Error::corrupt(format!("payload {what} has no usable size"))),
    };
    let raw = zstd::bulk::decompress(bytes, size)
        .map_err(|e| Error::corrupt(format!("payload {what} does not decompress: {e}")))?;
    if raw.len() != size {
        return Err(Error::corrupt(format!(
            "payload {what} is shorter than it claims"
        )));
    }
    Ok(raw)
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

    /// Whether the whole tree is kept in the task part (the header says so, so a warm
    /// start knows without reading the manifest).
    pub fn is_direct(&self) -> bool {
        self.header.flags & FLAG_DIRECT != 0
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

    /// The manifest's bytes as encoded, checked against their hash and inflated.
    pub fn raw_manifest(&self) -> Result<Vec<u8>> {
        let h = &self.header;
        let at = HEADER_LEN as u64 + h.launch_len;
        let bytes = self.section(at, h.manifest_len, &h.manifest_sha256, "manifest")?;
        inflate_section(&bytes, MAX_MANIFEST, "manifest")
    }

    pub fn manifest(&self) -> Result<Manifest> {
        let h = &self.header;
        let manifest = Manifest::decode(self.raw_manifest()?)?;
        let chunks_len = manifest
            .chunks
            .iter()
            .try_fold(0u64, |sum, c| sum.checked_add(c.compressed_len));
        if chunks_len != Some(h.chunks_len) {
            return Err(Error::corrupt(
                "manifest chunk sizes do not match the payload's length",
            ));
        }
        if manifest.is_direct() != self.is_direct() {
            return Err(Error::corrupt(
                "payload header and manifest disagree on where the tree is",
            ));
        }
        Ok(manifest)
    }

    /// The list of what the task part holds, checked against the manifest's hash of it.
    pub fn task_index(&self, manifest: &Manifest) -> Result<TaskIndex> {
        let h = &self.header;
        let at = HEADER_LEN as u64 + h.launch_len + h.manifest_len;
        let bytes = self.section(
            at,
            h.task_index_len,
            &manifest.task_index_sha256,
            "task index",
        )?;
        TaskIndex::decode(&inflate_section(&bytes, MAX_TASK_INDEX, "task index")?)
    }

    /// Offset of the chunks region within the payload.
    fn chunks_at(&self) -> u64 {
        let h = &self.header;
        HEADER_LEN as u64 + h.launch_len + h.manifest_len + h.task_index_len
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
    /// Bytes of the chunk not yet read.
    pub fn left(&self) -> u64 {
        self.left
    }

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
