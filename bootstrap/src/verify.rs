//! The warm path's question: is the tree an earlier init left still the payload's tree?
//!
//! `/tmp` outlives inits, and so does whatever the function's own code did to it. How
//! much to check before reuse is the user's call (`COLDPACK_VERIFY`):
//! - `marker`: the completion marker names this payload, this very directory (device,
//!   inode and change time) and this task part;
//! - `stat` (default): also every entry's type, mode, size and mtime, and that no
//!   entry changed after the tree was published. The marker records the root's change
//!   time (ctime) at publication, and no entry of an intact tree has a later one;
//!   writing, truncating, chmod'ing, renaming or replacing an entry, or adding or
//!   removing one in a directory, sets ctime to the current time, and an unprivileged
//!   process cannot set it back. So a same-size rewrite whose mtime was put back, or
//!   a file added where the directory's mtime was then restored, is caught, with the
//!   same one `fstatat` per entry. What it misses: a change within the same tick of
//!   the kernel's coarse clock as the publication itself (a few milliseconds, before
//!   the runtime has even started), and a clock set backwards;
//! - `full`: also every file's contents, read back in the payload's chunk order and
//!   compared with each chunk's SHA-256 of them.
//!
//! Entries are visited in manifest order, a run of them per job, on one thread per
//! 4,096 entries up to the number of cores, each looked up by name in its directory,
//! which the thread keeps open (see `cursor`).

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::sys::stat::{FileStat, SFlag};
use sha2::{Digest, Sha256};

use crate::cursor::Cursor;
use crate::manifest::{Kind, Manifest, Mtime, Piece};
use crate::{parallel, sys};

/// Entries per job: enough that a thread's open path is mostly reused.
const ENTRIES_PER_JOB: usize = 512;

/// Entries a thread must have to pay for starting it and opening its own directories:
/// below this one thread checks alone. Measured on the CPython tree kept at the default
/// task budget (1,627 entries in the cache), 2 cores, side by side, medians of 3×300
/// warm starts: one thread 2.11–2.21 ms, two 2.29–2.59 ms.
const ENTRIES_PER_THREAD: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Marker,
    Stat,
    Full,
}

impl Level {
    pub fn parse(value: &str) -> Option<Level> {
        match value {
            "marker" => Some(Level::Marker),
            "stat" => Some(Level::Stat),
            "full" => Some(Level::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Marker => "marker",
            Level::Stat => "stat",
            Level::Full => "full",
        }
    }
}

/// The tree to check: `root_name` in the open cache directory, published at
/// `watermark` (the root's ctime then).
pub struct Tree<'a> {
    pub cache_dir: &'a File,
    pub root_name: &'a [u8],
    pub watermark: Mtime,
}

/// Checks the tree against `manifest` at `level` (`Stat` or `Full`); `Err` says what
/// differs, for the start's log line.
pub fn check_tree(tree: &Tree, manifest: &Manifest, level: Level) -> Result<(), String> {
    // The root is looked up from the cache directory, so a root swapped for a link
    // shows.
    check_entry(manifest, 0, tree.cache_dir, tree.root_name, tree.watermark)
        .map_err(|why| format!("the tree's root: {why}"))?;
    let count = manifest.len();
    let jobs = count.div_ceil(ENTRIES_PER_JOB);
    parallel::run(
        jobs,
        parallel::threads_for(jobs, count.div_ceil(ENTRIES_PER_THREAD)),
        || Ok::<_, String>(Cursor::new(manifest, tree.cache_dir, tree.root_name, None)),
        |job, cursor| {
            let first = (job * ENTRIES_PER_JOB).max(1);
            for index in first..count.min((job + 1) * ENTRIES_PER_JOB) {
                let parent = manifest.parent(index);
                let dir = cursor.dir(parent).map_err(|e| {
                    format!("{:?}: cannot open directory: {e}", manifest.shown(parent))
                })?;
                check_entry(manifest, index, dir, manifest.name(index), tree.watermark)
                    .map_err(|why| format!("{:?}: {why}", manifest.shown(index)))?;
            }
            Ok(())
        },
    )?;
    if level == Level::Full {
        check_contents(tree, manifest)?;
    }
    Ok(())
}

/// Compares `name` inside the open directory `dir` with what entry `index` records.
fn check_entry(
    manifest: &Manifest,
    index: usize,
    dir: &File,
    name: &[u8],
    watermark: Mtime,
) -> Result<(), String> {
    let stat = sys::lstat_at(dir, name).map_err(|e| e.to_string())?;
    // A hardlink must look exactly like the file it links to.
    let expected = match manifest.kind(index) {
        Kind::Hardlink => manifest.hardlink_target(index),
        _ => index,
    };
    let kind = manifest.kind(expected);
    let want = match kind {
        Kind::Dir => SFlag::S_IFDIR,
        Kind::File | Kind::Hardlink => SFlag::S_IFREG,
        Kind::Symlink | Kind::TaskDir | Kind::TaskFile => SFlag::S_IFLNK,
    };
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != want {
        return Err("its type changed".into());
    }
    if want != SFlag::S_IFLNK && stat.st_mode & 0o7777 != manifest.mode(expected) {
        return Err(format!(
            "mode {:o}, expected {:o}",
            stat.st_mode & 0o7777,
            manifest.mode(expected)
        ));
    }
    if kind == Kind::File && stat.st_size as u64 != manifest.size(expected) {
        return Err(format!(
            "size {}, expected {}",
            stat.st_size,
            manifest.size(expected)
        ));
    }
    let mtime = manifest.mtime(expected);
    if (stat.st_mtime, stat.st_mtime_nsec as u32) != (mtime.sec, mtime.nsec) {
        return Err("its mtime changed".into());
    }
    if changed_after(&stat, watermark) {
        return Err("it changed after the tree was published".into());
    }
    Ok(())
}

fn changed_after(stat: &FileStat, watermark: Mtime) -> bool {
    (stat.st_ctime, stat.st_ctime_nsec as u32) > (watermark.sec, watermark.nsec)
}

/// Reads every chunk's share of the files back from the tree, on every core, and
/// compares it with the SHA-256 the manifest records for it.
fn check_contents(tree: &Tree, manifest: &Manifest) -> Result<(), String> {
    let plan = manifest.plan();
    let chunks = manifest.chunks.len();
    parallel::run(
        chunks,
        parallel::threads_for(chunks, usize::MAX),
        || {
            Ok((
                Cursor::new(manifest, tree.cache_dir, tree.root_name, None),
                vec![0; 256 * 1024],
            ))
        },
        |index, (cursor, buffer)| {
            let mut hasher = Sha256::new();
            for piece in plan.chunk(index) {
                hash_piece(manifest, cursor, piece, &mut hasher, buffer)
                    .map_err(|e| format!("{:?}: {e}", manifest.shown(piece.entry)))?;
            }
            if <[u8; 32]>::from(hasher.finalize()) != manifest.chunks[index].data_sha256 {
                let pieces = plan.chunk(index);
                let at = |piece: Option<&Piece>| {
                    piece.map_or_else(String::new, |p| manifest.shown(p.entry))
                };
                return Err(format!(
                    "contents differ between {:?} and {:?}",
                    at(pieces.first()),
                    at(pieces.last())
                ));
            }
            Ok(())
        },
    )
}

/// Feeds one piece of a file, read back from the tree, to `hasher`.
fn hash_piece(
    manifest: &Manifest,
    cursor: &mut Cursor,
    piece: &Piece,
    hasher: &mut Sha256,
    buffer: &mut [u8],
) -> std::io::Result<()> {
    let dir = cursor.dir(manifest.parent(piece.entry))?;
    let file = sys::open_file(dir, manifest.name(piece.entry))?;
    let mut done = 0;
    while done < piece.len {
        let want = buffer.len().min((piece.len - done) as usize);
        let n = file.read_at(&mut buffer[..want], piece.offset + done)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "shorter than recorded",
            ));
        }
        hasher.update(&buffer[..n]);
        done += n as u64;
    }
    Ok(())
}
