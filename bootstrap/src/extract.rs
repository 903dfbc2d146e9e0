//! The cold path: write the payload's tree into a fresh staging directory.
//!
//! Directories come first (owner-writable, so nothing blocks their children), then
//! every core decompresses chunks, each a zstd frame of a tar stream, and writes the
//! pieces of files it carries; a file split across chunks is written at its offset by
//! whichever threads hold its pieces. Then, on one thread: split and empty files,
//! hardlinks and symlinks, and last the directories' modes and mtimes, deepest first,
//! so that a read-only directory is closed only once its children exist (tar-rs does
//! the same).
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

use crate::chunk::{self, ChunkError};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Entry, EntryKind, Manifest, Piece};
use crate::parallel;
use crate::payload::Payload;
use crate::sys;

/// Decoding threads whose windows and buffers fit the memory budget (~32 MiB peak).
const MAX_THREADS: usize = 3;
const COPY_BUFFER: usize = 256 * 1024;

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

/// Extracts the whole tree into `staging`, which must not exist yet. On error the
/// caller removes `staging`; nothing was written anywhere else.
pub fn extract(payload: &Payload, manifest: &Manifest, staging: &Path) -> Result<Stats> {
    let write_err =
        |what: &str, path: &Path, e: io::Error| Error::io(ErrorKind::Extract, what, path, e);
    for entry in manifest.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        let path = entry_path(staging, entry);
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| write_err("cannot create directory", &path, e))?;
    }

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
                |entry, piece, member| write_piece(staging, entry, piece, member, buffer),
            )
        },
    )?;

    let split: Vec<usize> = pieces
        .iter()
        .flatten()
        .filter(|p| p.offset == 0 && !p.is_whole(manifest.entries[p.entry].file_size()))
        .map(|p| p.entry)
        .collect();
    finish_tree(manifest, staging, &split)?;
    Ok(Stats { threads })
}

/// Everything after the chunks: what no chunk carries, and the metadata that must be
/// set once all contents are in place.
/// `split` lists, in order, the files whose pieces came from more than one chunk.
fn finish_tree(manifest: &Manifest, staging: &Path, split: &[usize]) -> Result<()> {
    let write_err =
        |what: &str, path: &Path, e: io::Error| Error::io(ErrorKind::Extract, what, path, e);
    for (index, entry) in manifest.entries.iter().enumerate() {
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
            EntryKind::File { .. } => {
                if split.binary_search(&index).is_ok() {
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
            }
            EntryKind::Hardlink { target } => {
                let original = entry_path(staging, &manifest.entries[*target as usize]);
                fs::hard_link(&original, &path)
                    .map_err(|e| write_err("cannot create hardlink", &path, e))?;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                    .map_err(|e| write_err("cannot create symlink", &path, e))?;
                sys::set_mtime(&path, entry.mtime)
                    .map_err(|e| write_err("cannot set mtime of", &path, e))?;
            }
            EntryKind::Dir => {}
        }
    }
    for entry in manifest
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Dir)
    {
        let path = entry_path(staging, entry);
        fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
            .map_err(|e| write_err("cannot set mode of", &path, e))?;
        sys::set_mtime(&path, entry.mtime)
            .map_err(|e| write_err("cannot set mtime of", &path, e))?;
    }
    Ok(())
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
