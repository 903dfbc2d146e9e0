//! The cold path: write the payload's tree into a fresh staging directory.
//!
//! Every core decompresses chunks, each a zstd frame of a tar stream, and writes the
//! pieces of files it carries; a file split across chunks is written at its offset by
//! whichever threads hold its pieces. Directories are made on demand by the first
//! thread that needs one (owner-writable, so nothing blocks their children), so no
//! core waits for a serial pass over thousands of `mkdir`s. Then, again on every
//! core: directories no file needed, empty and split files, symlinks; hardlinks once
//! every file exists; and last the directories' modes and mtimes, which nothing
//! changes once all entries are in place. A directory its owner may not search is
//! closed after everything under it, deepest first (tar-rs does the same).
//!
//! The tar stream is never trusted for metadata: every path, mode and mtime comes from
//! the validated manifest, and the tar headers must agree with the plan derived from
//! it, piece by piece. Every entry is created with `O_EXCL`/`mkdir`/`symlink`, which
//! never follow a link in the last component, inside directories this function has
//! just made, so nothing can be written outside `staging`.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::chunk::{self, ChunkError};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Entry, EntryKind, Manifest, Piece};
use crate::parallel;
use crate::payload::Payload;
use crate::sys;

/// Decoding threads whose windows and buffers fit the memory budget (~32 MiB peak).
const MAX_THREADS: usize = 3;
const COPY_BUFFER: usize = 256 * 1024;
/// Entries per job of the finishing passes: enough to make a job worth taking.
const BATCH: usize = 256;

pub struct Stats {
    pub threads: usize,
}

/// Joins an entry's path onto the root it is extracted under.
pub fn entry_path(root: &Path, entry: &Entry) -> PathBuf {
    if entry.path.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(&entry.path))
    }
}

fn write_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(ErrorKind::Extract, what, path, e)
}

/// Extracts the whole tree into `staging`, which must not exist yet. On error the
/// caller removes `staging`; nothing was written anywhere else.
pub fn extract(payload: &Payload, manifest: &Manifest, staging: &Path) -> Result<Stats> {
    let dirs = Dirs::new(manifest, staging)?;
    let pieces = manifest.plan();
    let threads = parallel::threads_for(manifest.chunks.len(), MAX_THREADS);
    let starts = manifest.chunk_starts();
    parallel::run(
        manifest.chunks.len(),
        threads,
        || vec![0; COPY_BUFFER],
        |index, buffer| {
            chunk::read_pieces(
                payload,
                manifest,
                index,
                starts[index],
                &pieces[index],
                |entry, piece, member| {
                    dirs.make(dirs.parents[piece.entry] as usize)
                        .map_err(ChunkError::Write)?;
                    write_piece(staging, entry, piece, member, buffer)
                },
            )
        },
    )?;

    let split: Vec<usize> = pieces
        .iter()
        .flatten()
        .filter(|p| p.offset == 0 && !p.is_whole(manifest.entries[p.entry].file_size()))
        .map(|p| p.entry)
        .collect();
    finish_tree(&dirs, &split)?;
    Ok(Stats { threads })
}

/// The tree's directories, each made once, by whichever thread needs it first.
struct Dirs<'a> {
    manifest: &'a Manifest,
    staging: &'a Path,
    parents: Vec<u32>,
    /// Per entry: `ABSENT`, `MAKING` (a thread is in `mkdir`) or `MADE`.
    state: Vec<AtomicU8>,
}

const ABSENT: u8 = 0;
const MAKING: u8 = 1;
const MADE: u8 = 2;

impl<'a> Dirs<'a> {
    /// Makes `staging` itself, the root of the tree.
    fn new(manifest: &'a Manifest, staging: &'a Path) -> Result<Dirs<'a>> {
        // Validation already refused a manifest whose parents are not all listed.
        let parents = manifest.parents().unwrap_or_default();
        let state: Vec<AtomicU8> = (0..manifest.entries.len())
            .map(|_| AtomicU8::new(ABSENT))
            .collect();
        let dirs = Dirs {
            manifest,
            staging,
            parents,
            state,
        };
        dirs.make(0)?;
        Ok(dirs)
    }

    /// Makes directory entry `dir` and its ancestors if no thread has yet.
    fn make(&self, dir: usize) -> Result<()> {
        loop {
            match self.state[dir].load(Ordering::Acquire) {
                MADE => return Ok(()),
                // Another thread is inside `mkdir`: a few microseconds.
                MAKING => std::thread::yield_now(),
                _ => {
                    if dir != 0 {
                        self.make(self.parents[dir] as usize)?;
                    }
                    if self.state[dir]
                        .compare_exchange(ABSENT, MAKING, Ordering::Acquire, Ordering::Acquire)
                        .is_err()
                    {
                        continue;
                    }
                    let path = entry_path(self.staging, &self.manifest.entries[dir]);
                    let made = DirBuilder::new().mode(0o700).create(&path);
                    // On failure the next thread to need it tries again and reports
                    // the same reason: the extraction is failing either way.
                    let next = if made.is_ok() { MADE } else { ABSENT };
                    self.state[dir].store(next, Ordering::Release);
                    return made.map_err(|e| write_err("cannot create directory", &path, e));
                }
            }
        }
    }
}

/// Everything after the chunks: what no chunk carries, and the metadata that must be
/// set once all contents are in place.
/// `split` lists, in order, the files whose pieces came from more than one chunk.
fn finish_tree(dirs: &Dirs, split: &[usize]) -> Result<()> {
    let (manifest, staging) = (dirs.manifest, dirs.staging);
    let entries = &manifest.entries;
    // Hardlinks wait for the second pass: their target may be an empty file.
    each_entry(entries.len(), |index| {
        let entry = &entries[index];
        match &entry.kind {
            EntryKind::Dir => return dirs.make(index),
            EntryKind::Hardlink { .. } => return Ok(()),
            _ => dirs.make(dirs.parents[index] as usize)?,
        }
        let path = entry_path(staging, entry);
        match &entry.kind {
            EntryKind::File { size: 0, .. } => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(entry.mode)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| write_err("cannot create", &path, e))?;
                sys::set_file_mtime(&file, entry.mtime)
                    .map_err(|e| write_err("cannot set mtime of", &path, e))?;
            }
            // Whole files got their mode and mtime from their chunk's thread; a split
            // one was created owner-writable so that every piece could open it.
            EntryKind::File { .. } if split.binary_search(&index).is_ok() => {
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| write_err("cannot open", &path, e))?;
                sys::set_file_mtime(&file, entry.mtime)
                    .map_err(|e| write_err("cannot set mtime of", &path, e))?;
                file.set_permissions(fs::Permissions::from_mode(entry.mode))
                    .map_err(|e| write_err("cannot set mode of", &path, e))?;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                    .map_err(|e| write_err("cannot create symlink", &path, e))?;
                sys::set_mtime(&path, entry.mtime)
                    .map_err(|e| write_err("cannot set mtime of", &path, e))?;
            }
            _ => {}
        }
        Ok(())
    })?;
    each_entry(entries.len(), |index| {
        let EntryKind::Hardlink { target } = entries[index].kind else {
            return Ok(());
        };
        let (original, path) = (
            entry_path(staging, &entries[target as usize]),
            entry_path(staging, &entries[index]),
        );
        fs::hard_link(&original, &path).map_err(|e| write_err("cannot create hardlink", &path, e))
    })?;
    // Setting a directory's mode or mtime changes nothing in its parent, so order does
    // not matter, except under a directory its owner cannot search: those go last,
    // deepest first, the way a serial pass in reverse path order visits them.
    let searchable = |entry: &Entry| entry.mode & 0o100 != 0;
    each_entry(entries.len(), |index| {
        let entry = &entries[index];
        if entry.kind == EntryKind::Dir && searchable(entry) {
            close_dir(staging, entry)?;
        }
        Ok(())
    })?;
    entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Dir && !searchable(e))
        .try_for_each(|entry| close_dir(staging, entry))
}

/// Runs `work` for every entry index, in batches spread over every core.
fn each_entry(count: usize, work: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let jobs = count.div_ceil(BATCH);
    let threads = parallel::threads_for(jobs, usize::MAX);
    parallel::run(
        jobs,
        threads,
        || (),
        |job, ()| (job * BATCH..count.min((job + 1) * BATCH)).try_for_each(&work),
    )
}

/// Gives a directory its recorded mode and mtime.
fn close_dir(staging: &Path, entry: &Entry) -> Result<()> {
    let path = entry_path(staging, entry);
    fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
        .map_err(|e| write_err("cannot set mode of", &path, e))?;
    sys::set_mtime(&path, entry.mtime).map_err(|e| write_err("cannot set mtime of", &path, e))
}

/// Writes one piece of a file: a whole file with its final mode and mtime at once,
/// or one part of a split file at its offset.
fn write_piece(
    staging: &Path,
    entry: &Entry,
    piece: &Piece,
    member: &mut dyn Read,
    buffer: &mut [u8],
) -> std::result::Result<(), ChunkError> {
    let path = entry_path(staging, entry);
    let write =
        |what: &str, e: io::Error| ChunkError::Write(Error::io(ErrorKind::Extract, what, &path, e));
    let whole = piece.is_whole(entry.file_size());
    let mut options = OpenOptions::new();
    options.write(true).custom_flags(nix::libc::O_NOFOLLOW);
    if whole {
        // A new file's descriptor is writable whatever mode it is created with, so a
        // read-only file gets its final mode at once and no chmod is needed.
        options.create_new(true).mode(entry.mode);
    } else {
        options.create(true).mode(0o600);
    }
    let mut file = options.open(&path).map_err(|e| write("cannot create", e))?;
    let mut at = piece.offset;
    loop {
        let n = member.read(buffer).map_err(ChunkError::Read)?;
        if n == 0 {
            break;
        }
        if whole {
            file.write_all(&buffer[..n])
        } else {
            file.write_all_at(&buffer[..n], at)
        }
        .map_err(|e| write("cannot write", e))?;
        at += n as u64;
    }
    if whole {
        sys::set_file_mtime(&file, entry.mtime).map_err(|e| write("cannot set mtime of", e))?;
    }
    Ok(())
}
