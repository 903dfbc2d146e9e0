//! The manifest: every entry of the tree the bootstrap builds in the cache directory,
//! and the chunks that carry the files' contents.
//!
//! Entries are ordered by directory: the root first, then the children of the root,
//! then the children of each directory in the order the directories were listed (a
//! breadth-first walk), each directory's children sorted by name. So every entry
//! names only its parent's index and its own last component, a directory's children
//! are one contiguous run, and the warm check and the extraction visit directory after
//! directory with one open handle each, without a path walk or a map of paths.
//!
//! The encoding is columnar (all kinds, then all parents, then all modes, ...), which
//! zstd compresses well and which decodes without an allocation per entry: the
//! decoded [`Manifest`] keeps the raw bytes and reads each field in place.
//!
//! The files' contents, concatenated in entry order, form one *data stream*; chunk `i`
//! holds the next `data_len` bytes of it. A chunk boundary can fall inside a file, so
//! a large file is written by several threads at once, each at its own offset.
//!
//! [`Manifest::decode`] is where hostile bytes are stopped. It accepts only a tree
//! that can be created one name at a time inside directories the bootstrap has just
//! made: every name a single normal component, names strictly sorted within their
//! directory (so no duplicates), every parent a directory listed before its children,
//! hardlinks pointing back at regular files, no setuid or setgid bits, owners able to
//! read their files and read and search their directories, and chunk totals that add
//! up.
//! docs/design.md describes the format in full.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::launch::{check_name, MAX_PATH};
use crate::wire::{le_i64, le_u16, le_u32, le_u64, Reader, Writer};

/// Permission bits the bootstrap will set; setuid and setgid are never among them.
pub const MODE_MASK: u32 = 0o1777;
/// Largest raw manifest the bootstrap will inflate (about 150,000 entries): with the
/// decoded offsets and the decoding threads' buffers it keeps a start within 32 MiB.
pub const MAX_MANIFEST: u64 = 6 << 20;
/// Most bytes of the data stream one chunk may carry: the packer holds a chunk in
/// memory to compress it.
pub const MAX_CHUNK_DATA: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

/// What an entry is, as the packer and the tests describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Another name for the regular file at this index of the entry list.
    Hardlink {
        target: u32,
    },
    /// Kept in the deployment's task part: the bootstrap makes a symlink to the same
    /// path under the task part's directory (a directory when `dir`).
    Task {
        dir: bool,
    },
}

/// One entry in listing form: what the packer builds and the tests compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree's root, `/`-separated; empty for the root itself.
    pub path: Vec<u8>,
    /// Index of the directory holding it (0, the root, for the root itself).
    pub parent: u32,
    /// Permission bits, within [`MODE_MASK`]; 0o777 for links.
    pub mode: u32,
    pub mtime: Mtime,
    pub kind: EntryKind,
}

impl Entry {
    /// Bytes this entry contributes to the data stream.
    pub fn file_size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size } => size,
            _ => 0,
        }
    }

    /// The last component of the path.
    pub fn name(&self) -> &[u8] {
        let at = self
            .path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        &self.path[at..]
    }
}

/// An entry's kind as the decoded manifest stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Hardlink,
    TaskDir,
    TaskFile,
}

impl Kind {
    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Kind> {
        [
            Kind::Dir,
            Kind::File,
            Kind::Symlink,
            Kind::Hardlink,
            Kind::TaskDir,
            Kind::TaskFile,
        ]
        .get(usize::from(code))
        .copied()
    }

    pub fn is_task(self) -> bool {
        matches!(self, Kind::TaskDir | Kind::TaskFile)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Bytes of the data stream this chunk carries.
    pub data_len: u64,
    /// Bytes of the zstd frame in the payload.
    pub compressed_len: u64,
    /// SHA-256 of the compressed bytes, checked as they stream through the decoder.
    pub sha256: [u8; 32],
    /// SHA-256 of the `data_len` bytes of file contents the chunk carries: what
    /// `COLDPACK_VERIFY=full` and `coldpack verify` compare the contents with.
    pub data_sha256: [u8; 32],
}

const CHUNK_LEN: usize = 8 + 8 + 32 + 32;
/// Fixed bytes per entry: kind, parent, mode, mtime, extra, name length.
const ENTRY_LEN: usize = 1 + 4 + 2 + 8 + 4 + 8 + 1;

/// Encodes `entries` (in manifest order, root first) and `chunks`, naming the task
/// index by its SHA-256. Nothing is checked here: the packer's output is checked by
/// decoding it, and tests and fuzzers build hostile manifests with it on purpose.
pub fn encode(entries: &[Entry], chunks: &[Chunk], task_index_sha256: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(entries.len() as u32);
    w.u32(chunks.len() as u32);
    for chunk in chunks {
        w.u64(chunk.data_len);
        w.u64(chunk.compressed_len);
        w.raw(&chunk.sha256);
        w.raw(&chunk.data_sha256);
    }
    w.raw(task_index_sha256);
    let kind = |e: &Entry| match e.kind {
        EntryKind::Dir => Kind::Dir,
        EntryKind::File { .. } => Kind::File,
        EntryKind::Symlink { .. } => Kind::Symlink,
        EntryKind::Hardlink { .. } => Kind::Hardlink,
        EntryKind::Task { dir: true } => Kind::TaskDir,
        EntryKind::Task { dir: false } => Kind::TaskFile,
    };
    entries.iter().for_each(|e| w.u8(kind(e).code()));
    entries.iter().for_each(|e| w.u32(e.parent));
    entries.iter().for_each(|e| w.u16(e.mode as u16));
    entries.iter().for_each(|e| w.i64(e.mtime.sec));
    entries.iter().for_each(|e| w.u32(e.mtime.nsec));
    entries.iter().for_each(|e| {
        w.u64(match &e.kind {
            EntryKind::File { size } => *size,
            EntryKind::Symlink { target } => target.len() as u64,
            EntryKind::Hardlink { target } => u64::from(*target),
            EntryKind::Dir | EntryKind::Task { .. } => 0,
        })
    });
    entries.iter().for_each(|e| w.u8(e.name().len() as u8));
    entries.iter().for_each(|e| w.raw(e.name()));
    for entry in entries {
        if let EntryKind::Symlink { target } = &entry.kind {
            w.raw(target);
        }
    }
    w.bytes
}

/// Where each column starts in the raw manifest.
#[derive(Clone, Copy, Debug, Default)]
struct Columns {
    kinds: usize,
    parents: usize,
    modes: usize,
    secs: usize,
    nsecs: usize,
    extras: usize,
    name_lens: usize,
    names: usize,
}

impl Columns {
    fn at(start: usize, count: usize) -> Columns {
        let kinds = start;
        let parents = kinds + count;
        let modes = parents + 4 * count;
        let secs = modes + 2 * count;
        let nsecs = secs + 8 * count;
        let extras = nsecs + 4 * count;
        let name_lens = extras + 8 * count;
        let names = name_lens + count;
        Columns {
            kinds,
            parents,
            modes,
            secs,
            nsecs,
            extras,
            name_lens,
            names,
        }
    }
}

/// A decoded, validated manifest. Fields are read in place from the raw bytes.
#[derive(Clone, Debug)]
pub struct Manifest {
    raw: Vec<u8>,
    count: usize,
    cols: Columns,
    /// Where each entry's name starts in `raw` (the end is the next one's start).
    name_starts: Vec<u32>,
    /// `(entry, start in raw)` of every symlink's target, in entry order.
    targets: Vec<(u32, u32)>,
    pub chunks: Vec<Chunk>,
    /// SHA-256 of the task index section (see `task`).
    pub task_index_sha256: [u8; 32],
}

impl Manifest {
    pub fn decode(raw: Vec<u8>) -> Result<Manifest> {
        let mut r = Reader::new(&raw, "manifest");
        let count = r.count(ENTRY_LEN)?;
        let chunks = (0..r.count(CHUNK_LEN)?)
            .map(|_| {
                Ok(Chunk {
                    data_len: r.u64()?,
                    compressed_len: r.u64()?,
                    sha256: r.array()?,
                    data_sha256: r.array()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let task_index_sha256 = r.array()?;
        let cols = Columns::at(raw.len() - r.left(), count);
        if cols.names > raw.len() {
            return Err(Error::corrupt("payload manifest ends too early"));
        }
        let mut manifest = Manifest {
            raw,
            count,
            cols,
            name_starts: Vec::with_capacity(count + 1),
            targets: Vec::new(),
            chunks,
            task_index_sha256,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The rules that make extraction safe (see the module's documentation), checked
    /// in one pass that also records where names and link targets start.
    fn validate(&mut self) -> Result<()> {
        self.check_root()?;
        let (count, cols) = (self.count, self.cols);
        let mut path_lens: Vec<u16> = Vec::with_capacity(count);
        let mut at = cols.names;
        let mut data_len: u64 = 0;
        let mut targets_len: u64 = 0;
        for index in 0..count {
            let name_len = usize::from(self.raw[cols.name_lens + index]);
            self.name_starts.push(at as u32);
            at += name_len;
            if at > self.raw.len() {
                return Err(Error::corrupt("payload manifest ends too early"));
            }
            let kind = self.kind_checked(index)?;
            self.check_entry(index, kind, &mut path_lens)?;
            let extra = self.extra(index);
            match kind {
                Kind::File => {
                    data_len = data_len
                        .checked_add(extra)
                        .ok_or_else(|| self.bad(index, "overflows the data stream"))?;
                }
                Kind::Symlink => {
                    if extra == 0 || extra > MAX_PATH as u64 {
                        return Err(self.bad(index, "has an empty or overlong link target"));
                    }
                    self.targets.push((index as u32, targets_len as u32));
                    targets_len += extra;
                }
                Kind::Hardlink => {
                    let points_back =
                        extra < index as u64 && self.kind(extra as usize) == Kind::File;
                    if !points_back {
                        return Err(self.bad(
                            index,
                            "is a hardlink to something other than an earlier file",
                        ));
                    }
                }
                Kind::Dir | Kind::TaskDir | Kind::TaskFile if extra != 0 => {
                    return Err(self.bad(index, "carries data it cannot have"));
                }
                _ => {}
            }
        }
        self.name_starts.push(at as u32);
        self.check_targets(at, targets_len)?;
        self.check_chunks(data_len)
    }

    /// The first entry is the root: a directory, or a task directory alone (the whole
    /// tree kept in the task part, with nothing to extract).
    fn check_root(&self) -> Result<()> {
        if self.count == 0 {
            return Err(Error::corrupt(
                "manifest lists no entries, not even the root directory",
            ));
        }
        let root_kind = self.kind_checked(0)?;
        if !matches!(root_kind, Kind::Dir | Kind::TaskDir)
            || self.parent(0) != 0
            || self.raw[self.cols.name_lens] != 0
        {
            return Err(Error::corrupt(
                "manifest does not start with the root directory",
            ));
        }
        if root_kind == Kind::TaskDir && (self.count != 1 || !self.chunks.is_empty()) {
            return Err(Error::corrupt(
                "manifest keeps the whole tree in the task part and lists more",
            ));
        }
        Ok(())
    }

    /// The link targets fill the manifest from `at`, the end of the names, to its end,
    /// `targets_len` bytes with no NUL; each symlink's recorded start becomes absolute.
    fn check_targets(&mut self, at: usize, targets_len: u64) -> Result<()> {
        if (self.raw.len() - at) as u64 != targets_len {
            return Err(Error::corrupt(
                "payload manifest's link targets do not add up",
            ));
        }
        for target in &mut self.targets {
            target.1 += at as u32;
        }
        for &(index, start) in &self.targets {
            let len = self.extra(index as usize) as usize;
            if self.raw[start as usize..][..len].contains(&0) {
                return Err(self.bad(index as usize, "has a link target with a NUL byte"));
            }
        }
        Ok(())
    }

    /// Where `index` sits in the tree, its name, mode and mtime.
    fn check_entry(&self, index: usize, kind: Kind, path_lens: &mut Vec<u16>) -> Result<()> {
        let mode = u32::from(le_u16(&self.raw, self.cols.modes + 2 * index));
        if mode & !MODE_MASK != 0 {
            return Err(self.bad(index, &format!("has mode {mode:o}")));
        }
        // The bootstrap checks and removes what it extracts: a file its owner cannot
        // read or a directory its owner cannot search would defeat both.
        match kind {
            Kind::File if mode & 0o400 == 0 => {
                return Err(self.bad(index, "is a file its owner cannot read"))
            }
            Kind::Dir if mode & 0o500 != 0o500 => {
                return Err(self.bad(index, "is a directory its owner cannot search"))
            }
            _ => {}
        }
        if self.mtime(index).nsec >= 1_000_000_000 {
            return Err(self.bad(index, "has an mtime with over a second of nanoseconds"));
        }
        if index == 0 {
            path_lens.push(0);
            return Ok(());
        }
        let parent = self.parent(index);
        let previous = self.parent(index - 1);
        let ordered = parent < index
            && (index == 1 || parent >= previous)
            && (parent != previous || index == 1 || self.name(index - 1) < self.name(index));
        if !ordered {
            return Err(self.bad(index, "is out of order or listed twice"));
        }
        if self.kind(parent) != Kind::Dir {
            return Err(self.bad(index, "is not inside a directory"));
        }
        check_name(self.name(index)).map_err(|why| self.bad(index, why))?;
        let len =
            usize::from(path_lens[parent]) + usize::from(parent != 0) + self.name(index).len();
        if len > MAX_PATH {
            return Err(self.bad(index, "has a path longer than 4095 bytes"));
        }
        path_lens.push(len as u16);
        Ok(())
    }

    fn check_chunks(&self, data_len: u64) -> Result<()> {
        let mut chunked: u64 = 0;
        for chunk in &self.chunks {
            let bound = zstd::zstd_safe::compress_bound(chunk.data_len as usize) as u64;
            if chunk.data_len == 0
                || chunk.data_len > MAX_CHUNK_DATA
                || chunk.compressed_len == 0
                || chunk.compressed_len > bound
            {
                return Err(Error::corrupt("manifest lists a chunk of impossible size"));
            }
            chunked += chunk.data_len;
        }
        if chunked != data_len {
            return Err(Error::corrupt(
                "manifest chunks do not add up to the files' sizes",
            ));
        }
        Ok(())
    }

    /// An error about entry `index` while validating: its path is shown through the
    /// parents already checked, so a hostile parent index cannot lead anywhere.
    fn bad(&self, index: usize, why: &str) -> Error {
        let mut parts = vec![self.name(index)];
        let mut at = index;
        while at != 0 {
            let parent = self.parent(at);
            if parent >= at {
                parts.push(b"...");
                break;
            }
            at = parent;
            if at != 0 {
                parts.push(self.name(at));
            }
        }
        parts.reverse();
        let shown = String::from_utf8_lossy(&parts.join(&b'/')).into_owned();
        Error::corrupt(format!("manifest entry {shown:?} {why}"))
    }

    fn kind_checked(&self, index: usize) -> Result<Kind> {
        let code = self.raw[self.cols.kinds + index];
        Kind::from_code(code)
            .ok_or_else(|| Error::corrupt(format!("manifest has an unknown entry type {code}")))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn kind(&self, index: usize) -> Kind {
        Kind::from_code(self.raw[self.cols.kinds + index]).unwrap_or(Kind::Dir)
    }

    /// The directory holding entry `index` (0 for the root itself).
    pub fn parent(&self, index: usize) -> usize {
        le_u32(&self.raw, self.cols.parents + 4 * index) as usize
    }

    pub fn mode(&self, index: usize) -> u32 {
        u32::from(le_u16(&self.raw, self.cols.modes + 2 * index))
    }

    pub fn mtime(&self, index: usize) -> Mtime {
        Mtime {
            sec: le_i64(&self.raw, self.cols.secs + 8 * index),
            nsec: le_u32(&self.raw, self.cols.nsecs + 4 * index),
        }
    }

    /// Size of a file, target of a hardlink, length of a symlink's target.
    fn extra(&self, index: usize) -> u64 {
        le_u64(&self.raw, self.cols.extras + 8 * index)
    }

    /// Bytes entry `index` contributes to the data stream.
    pub fn size(&self, index: usize) -> u64 {
        if self.kind(index) == Kind::File {
            self.extra(index)
        } else {
            0
        }
    }

    /// The file a hardlink names.
    pub fn hardlink_target(&self, index: usize) -> usize {
        self.extra(index) as usize
    }

    /// A symlink's target.
    pub fn link_target(&self, index: usize) -> &[u8] {
        let at = self
            .targets
            .binary_search_by_key(&(index as u32), |&(entry, _)| entry)
            .map_or(0, |i| self.targets[i].1 as usize);
        &self.raw[at..][..self.extra(index) as usize]
    }

    /// The last component of entry `index`'s path (empty for the root).
    pub fn name(&self, index: usize) -> &[u8] {
        let start = self.name_starts[index] as usize;
        &self.raw[start..start + usize::from(self.raw[self.cols.name_lens + index])]
    }

    /// Entry `index`'s path from the root, `/`-separated.
    pub fn path(&self, index: usize) -> Vec<u8> {
        let mut chain = vec![index];
        while let Some(&last) = chain.last().filter(|&&i| i != 0) {
            chain.push(self.parent(last));
        }
        let mut path = Vec::new();
        for &i in chain.iter().rev().skip(1) {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(self.name(i));
        }
        path
    }

    /// The path, lossily, for messages.
    pub fn shown(&self, index: usize) -> String {
        String::from_utf8_lossy(&self.path(index)).into_owned()
    }

    /// Each directory that holds entries, with the run of its children.
    pub fn groups(&self) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        let mut at = 1;
        std::iter::from_fn(move || {
            if at >= self.count {
                return None;
            }
            let dir = self.parent(at);
            let start = at;
            while at < self.count && self.parent(at) == dir {
                at += 1;
            }
            Some((dir, start..at))
        })
    }

    /// Whether the whole tree is kept in the deployment's task part.
    pub fn is_direct(&self) -> bool {
        self.kind(0) == Kind::TaskDir
    }

    /// Every entry in listing form, with full paths: for tools and tests.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::with_capacity(self.count);
        for index in 0..self.count {
            let parent = self.parent(index);
            let path = if index == 0 {
                Vec::new()
            } else if parent == 0 {
                self.name(index).to_vec()
            } else {
                [&out[parent].path[..], b"/", self.name(index)].concat()
            };
            let kind = match self.kind(index) {
                Kind::Dir => EntryKind::Dir,
                Kind::File => EntryKind::File {
                    size: self.extra(index),
                },
                Kind::Symlink => EntryKind::Symlink {
                    target: self.link_target(index).to_vec(),
                },
                Kind::Hardlink => EntryKind::Hardlink {
                    target: self.extra(index) as u32,
                },
                Kind::TaskDir => EntryKind::Task { dir: true },
                Kind::TaskFile => EntryKind::Task { dir: false },
            };
            out.push(Entry {
                path,
                parent: parent as u32,
                mode: self.mode(index),
                mtime: self.mtime(index),
                kind,
            });
        }
        out
    }

    /// Cuts the data stream at the chunks' boundaries. Validation guarantees that the
    /// sizes agree.
    pub fn plan(&self) -> Plan {
        Plan::new(
            (0..self.count)
                .filter(|&i| self.size(i) > 0)
                .map(|i| (i, self.size(i))),
            self.chunks.iter().map(|c| c.data_len),
        )
    }

    /// Where each chunk starts within the payload's chunks region.
    pub fn chunk_starts(&self) -> Vec<u64> {
        self.chunks
            .iter()
            .scan(0u64, |at, chunk| {
                let start = *at;
                *at += chunk.compressed_len;
                Some(start)
            })
            .collect()
    }

    /// Bytes of memory the decoded manifest holds.
    pub fn memory(&self) -> usize {
        self.raw.capacity() + 4 * self.name_starts.capacity() + 8 * self.targets.capacity()
    }
}

/// One contiguous run of a file's bytes inside one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index of the file in the manifest.
    pub entry: usize,
    pub offset: u64,
    pub len: u64,
    /// The whole file: created, written and finished by the chunk's thread alone.
    pub whole: bool,
}

/// The pieces of files each chunk carries, in data-stream order.
pub struct Plan {
    pieces: Vec<Piece>,
    starts: Vec<usize>,
}

impl Plan {
    /// Cuts the data stream of `files` (entry index and size, in order, none empty)
    /// into chunks of `data_lens` bytes.
    pub fn new(
        files: impl Iterator<Item = (usize, u64)>,
        data_lens: impl Iterator<Item = u64>,
    ) -> Plan {
        let mut files = files;
        let mut pieces = Vec::new();
        let mut starts = Vec::new();
        let mut current = files.next();
        let mut done_in_current = 0;
        for data_len in data_lens {
            starts.push(pieces.len());
            let mut left = data_len;
            while let (true, Some((entry, size))) = (left > 0, current) {
                let len = (size - done_in_current).min(left);
                pieces.push(Piece {
                    entry,
                    offset: done_in_current,
                    len,
                    whole: done_in_current == 0 && len == size,
                });
                left -= len;
                done_in_current += len;
                if done_in_current == size {
                    current = files.next();
                    done_in_current = 0;
                }
            }
        }
        starts.push(pieces.len());
        Plan { pieces, starts }
    }

    pub fn chunk(&self, index: usize) -> &[Piece] {
        &self.pieces[self.starts[index]..self.starts[index + 1]]
    }

    /// The files whose pieces came from more than one chunk, in order.
    pub fn split_files(&self) -> Vec<usize> {
        self.pieces
            .iter()
            .filter(|p| p.offset == 0 && !p.whole)
            .map(|p| p.entry)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: with no entries, the root's type was read past the end.
    #[test]
    fn manifest_without_entries_is_refused() {
        let raw = encode(&[], &[], &[0; 32]);
        let err = Manifest::decode(raw).unwrap_err();
        assert!(err.to_string().contains("no entries"), "{err}");
    }
}
