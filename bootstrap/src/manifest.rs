//! What the payload says about the tree and how to start it.
//!
//! Two sections, each hashed on its own in the payload header:
//! - the [`Launch`] section: the name, the entrypoint, its arguments and environment.
//!   It is tiny, so a warm start that trusts the completion marker reads nothing else.
//! - the [`Manifest`]: every entry of the tree (path, type, mode, mtime, size, link
//!   target) in byte-sorted path order, and the compressed chunks that carry the
//!   files' contents, each with the SHA-256 of its compressed and of its raw bytes.
//!
//! The files' contents, concatenated in entry order, form one *data stream*; chunk `i`
//! holds the next `data_len` bytes of it. A chunk boundary can fall inside a file, so
//! a large file is written by several threads at once, each at its own offset.
//!
//! [`Manifest::decode`] is where hostile bytes are stopped. It accepts only a tree
//! that can be created without following a link and without leaving the root: every
//! path made of normal components, strictly sorted (so no duplicates), every parent
//! a directory entry listed before its children, hardlinks pointing back at regular
//! files, no setuid or setgid bits, and chunk totals that add up.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// FxHash's mixing step, for the map of directories that every start builds: std's
/// SipHash defends against chosen collisions, and a payload could only slow down its
/// own start with them, but SipHash costs the warm path a millisecond or two.
#[derive(Default)]
struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Linux's `PATH_MAX` less the terminating NUL.
const MAX_PATH: usize = 4095;
/// Linux's `NAME_MAX`.
const MAX_COMPONENT: usize = 255;
/// Permission bits the bootstrap will set; setuid and setgid are never among them.
pub const MODE_MASK: u32 = 0o1777;

/// How to start the runtime once its tree is in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Names the cache directory's entries; `[A-Za-z0-9_-]`, so `.` can separate suffixes.
    pub name: String,
    /// Path of the executable inside the tree.
    pub entrypoint: Vec<u8>,
    /// Arguments placed before the ones the bootstrap itself receives; `{root}` is
    /// replaced by the tree's path.
    pub args: Vec<Vec<u8>>,
    /// Variables added to the environment the bootstrap received; `{root}` in values is
    /// replaced by the tree's path.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree's root, `/`-separated; empty for the root itself.
    pub path: Vec<u8>,
    /// Permission bits, within [`MODE_MASK`]; meaningless for symlinks.
    pub mode: u32,
    pub mtime: Mtime,
    pub kind: EntryKind,
}

impl Entry {
    /// Bytes this entry contributes to the data stream.
    pub fn file_size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        }
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
    /// `COLDPACK_VERIFY=full` and `coldpack verify` compare the contents with. One
    /// per chunk rather than one per file: 32 incompressible bytes per file were
    /// 1.3% of a CPython payload.
    pub data_sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub chunks: Vec<Chunk>,
}

/// One contiguous run of a file's bytes inside one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index of the file in the entry list.
    pub entry: usize,
    pub offset: u64,
    pub len: u64,
}

impl Piece {
    pub fn is_whole(&self, size: u64) -> bool {
        self.offset == 0 && self.len == size
    }
}

const KIND_DIR: u8 = 0;
const KIND_FILE: u8 = 1;
const KIND_SYMLINK: u8 = 2;
const KIND_HARDLINK: u8 = 3;

/// Smallest encoded entry: kind, mode, mtime, empty path.
const MIN_ENTRY: usize = 1 + 4 + 8 + 4 + 4;
const CHUNK_SIZE: usize = 8 + 8 + 32 + 32;

impl Launch {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.blob(self.name.as_bytes());
        w.blob(&self.entrypoint);
        w.u32(self.args.len() as u32);
        for arg in &self.args {
            w.blob(arg);
        }
        w.u32(self.env.len() as u32);
        for (key, value) in &self.env {
            w.blob(key);
            w.blob(value);
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Launch> {
        let mut r = Reader::new(bytes, "launch section");
        let name = String::from_utf8(r.blob()?.to_vec())
            .ok()
            .filter(|name| valid_name(name))
            .ok_or_else(|| Error::corrupt("payload name is not made of [A-Za-z0-9_-]"))?;
        let entrypoint = r.blob()?.to_vec();
        check_path(&entrypoint).map_err(|why| Error::corrupt(format!("entrypoint {why}")))?;
        let args = (0..r.count(4)?)
            .map(|_| Ok(r.blob()?.to_vec()))
            .collect::<Result<Vec<_>>>()?;
        let env = (0..r.count(8)?)
            .map(|_| Ok((r.blob()?.to_vec(), r.blob()?.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        for (key, _) in &env {
            if !valid_env_key(key) {
                return Err(Error::corrupt(format!(
                    "environment variable name {:?} is not valid",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        if args
            .iter()
            .chain(env.iter().map(|(_, v)| v))
            .any(|s| s.contains(&0))
        {
            return Err(Error::corrupt(
                "an argument or variable contains a NUL byte",
            ));
        }
        Ok(Launch {
            name,
            entrypoint,
            args,
            env,
        })
    }
}

/// A name the cache directory can use verbatim: `[A-Za-z0-9_-]`, 1 to 64 bytes.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An environment variable name the exec can pass on: non-empty, no `=` or NUL.
pub fn valid_env_key(key: &[u8]) -> bool {
    !key.is_empty() && !key.contains(&b'=') && !key.contains(&0)
}

/// Checks that `path` is relative, made only of normal components, and fits Linux's
/// limits. Says why not, for the caller to put in context.
pub fn check_path(path: &[u8]) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.len() > MAX_PATH {
        return Err("is longer than 4095 bytes");
    }
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" => return Err("has an empty component (absolute, or `//`)"),
            b"." | b".." => return Err("has a `.` or `..` component"),
            c if c.len() > MAX_COMPONENT => return Err("has a component over 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// The path of the directory that holds `path` (empty for the root's children).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.entries.len() as u32);
        for entry in &self.entries {
            let kind = match entry.kind {
                EntryKind::Dir => KIND_DIR,
                EntryKind::File { .. } => KIND_FILE,
                EntryKind::Symlink { .. } => KIND_SYMLINK,
                EntryKind::Hardlink { .. } => KIND_HARDLINK,
            };
            w.u8(kind);
            w.u32(entry.mode);
            w.i64(entry.mtime.sec);
            w.u32(entry.mtime.nsec);
            w.blob(&entry.path);
            match &entry.kind {
                EntryKind::Dir => {}
                EntryKind::File { size } => w.u64(*size),
                EntryKind::Symlink { target } => w.blob(target),
                EntryKind::Hardlink { target } => w.u32(*target),
            }
        }
        w.u32(self.chunks.len() as u32);
        for chunk in &self.chunks {
            w.u64(chunk.data_len);
            w.u64(chunk.compressed_len);
            w.raw(&chunk.sha256);
            w.raw(&chunk.data_sha256);
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let mut r = Reader::new(bytes, "manifest");
        let count = r.count(MIN_ENTRY)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.u8()?;
            let mode = r.u32()?;
            let mtime = Mtime {
                sec: r.i64()?,
                nsec: r.u32()?,
            };
            let path = r.blob()?.to_vec();
            let kind = match kind {
                KIND_DIR => EntryKind::Dir,
                KIND_FILE => EntryKind::File { size: r.u64()? },
                KIND_SYMLINK => EntryKind::Symlink {
                    target: r.blob()?.to_vec(),
                },
                KIND_HARDLINK => EntryKind::Hardlink { target: r.u32()? },
                other => return Err(Error::corrupt(format!("unknown entry type {other}"))),
            };
            entries.push(Entry {
                path,
                mode,
                mtime,
                kind,
            });
        }
        let chunks = (0..r.count(CHUNK_SIZE)?)
            .map(|_| {
                Ok(Chunk {
                    data_len: r.u64()?,
                    compressed_len: r.u64()?,
                    sha256: r.array()?,
                    data_sha256: r.array()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        let manifest = Manifest { entries, chunks };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The rules that make extraction safe; see the module's documentation.
    fn validate(&self) -> Result<()> {
        let Some(root) = self.entries.first() else {
            return Err(Error::corrupt("manifest lists no entries"));
        };
        if !root.path.is_empty() || root.kind != EntryKind::Dir {
            return Err(Error::corrupt(
                "manifest does not start with the root directory",
            ));
        }
        let mut data_len: u64 = 0;
        for (index, entry) in self.entries.iter().enumerate() {
            // Built only on failure: this loop runs over every entry at every warm start.
            let bad = |why: String| {
                let shown = String::from_utf8_lossy(&entry.path);
                Error::corrupt(format!("manifest entry {shown:?} {why}"))
            };
            if entry.mode & !MODE_MASK != 0 {
                return Err(bad(format!("has mode {:o}", entry.mode)));
            }
            if entry.mtime.nsec >= 1_000_000_000 {
                return Err(bad("has an mtime with over a second of nanoseconds".into()));
            }
            if index > 0 {
                check_path(&entry.path).map_err(|why| bad(why.into()))?;
                if entry.path <= self.entries[index - 1].path {
                    return Err(bad("is out of order or listed twice".into()));
                }
            }
            match &entry.kind {
                EntryKind::Dir => {}
                EntryKind::File { size, .. } => {
                    data_len = data_len
                        .checked_add(*size)
                        .ok_or_else(|| bad("overflows the data stream".into()))?;
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                        return Err(bad(
                            "has an empty, overlong or NUL-bearing link target".into()
                        ));
                    }
                }
                EntryKind::Hardlink { target } => {
                    let points_back = (*target as usize) < index
                        && matches!(self.entries[*target as usize].kind, EntryKind::File { .. });
                    if !points_back {
                        return Err(bad(
                            "is a hardlink to something other than an earlier file".into()
                        ));
                    }
                }
            }
        }
        if let Err(index) = self.parents() {
            let shown = String::from_utf8_lossy(&self.entries[index].path);
            return Err(Error::corrupt(format!(
                "manifest entry {shown:?} is not inside a directory listed before it"
            )));
        }
        let chunked = self
            .chunks
            .iter()
            .try_fold(0u64, |sum, chunk| sum.checked_add(chunk.data_len));
        if chunked != Some(data_len) || self.chunks.iter().any(|c| c.data_len == 0) {
            return Err(Error::corrupt(
                "manifest chunks do not add up to the files' sizes",
            ));
        }
        Ok(())
    }

    /// The index of each entry's directory (the root's own is 0), or the index of the
    /// first entry whose directory is not listed before it.
    pub fn parents(&self) -> std::result::Result<Vec<u32>, usize> {
        let mut dirs: HashMap<&[u8], u32, BuildHasherDefault<PathHasher>> = HashMap::default();
        let mut parents = Vec::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            let dir = if index == 0 {
                0
            } else {
                *dirs.get(parent(&entry.path)).ok_or(index)?
            };
            if entry.kind == EntryKind::Dir {
                dirs.insert(&entry.path, index as u32);
            }
            parents.push(dir);
        }
        Ok(parents)
    }

    /// Cuts the data stream at the chunks' boundaries: for each chunk, the pieces of
    /// files it carries, in order. Validation guarantees that the sizes agree.
    pub fn plan(&self) -> Vec<Vec<Piece>> {
        let mut files = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.file_size() > 0)
            .map(|(i, e)| (i, e.file_size()));
        let mut current = files.next();
        let mut done_in_current = 0;
        self.chunks
            .iter()
            .map(|chunk| {
                let mut pieces = Vec::new();
                let mut left = chunk.data_len;
                while let (true, Some((entry, size))) = (left > 0, current) {
                    let len = (size - done_in_current).min(left);
                    pieces.push(Piece {
                        entry,
                        offset: done_in_current,
                        len,
                    });
                    left -= len;
                    done_in_current += len;
                    if done_in_current == size {
                        current = files.next();
                        done_in_current = 0;
                    }
                }
                pieces
            })
            .collect()
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
}
