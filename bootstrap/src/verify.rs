//! The warm path's question: is the tree an earlier init left still the payload's tree?
//!
//! `/tmp` outlives inits, and so does whatever the function's own code did to it. How
//! much to check before reuse is the user's call (`COLDPACK_VERIFY`):
//! - `marker`: the completion marker names this payload and this very directory;
//! - `stat` (default): also every entry's type, mode, size, mtime and link target, so
//!   a deleted, truncated, grown, chmod'ed or swapped entry is caught; directories'
//!   mtimes change when entries are added or removed, so those are caught too;
//! - `full`: also every file's SHA-256, for changes that keep size and mtime.
//!
//! Entries are grouped by directory and each directory is opened once, so a check
//! is one `fstatat` per entry with a one-component lookup; groups are spread over
//! the available cores.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::stat::SFlag;
use sha2::{Digest, Sha256};

use crate::extract::entry_path;
use crate::manifest::{parent, Entry, EntryKind, Manifest};
use crate::{parallel, sys};

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

/// Checks the tree at `root` against `manifest` at `level` (`Stat` or `Full`);
/// `Err` says what differs, for the start's log line.
pub fn check_tree(root: &Path, manifest: &Manifest, level: Level) -> Result<(), String> {
    let groups = by_directory(manifest);
    let threads = parallel::threads_for(groups.len(), usize::MAX);
    parallel::run(groups.len(), threads, Vec::new, |job, buffer| {
        let (dir, children) = &groups[job];
        check_group(root, manifest, *dir, children, level, buffer)
    })
}

/// Entry indices grouped under the index of the directory holding them. The root
/// itself is checked as a member of its own group.
fn by_directory(manifest: &Manifest) -> Vec<(usize, Vec<usize>)> {
    // Validation already refused a manifest whose parents are not all listed.
    let parents = manifest.parents().unwrap_or_default();
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut group_of_dir = vec![usize::MAX; manifest.entries.len()];
    for (index, &dir) in parents.iter().enumerate() {
        let dir = dir as usize;
        if group_of_dir[dir] == usize::MAX {
            group_of_dir[dir] = groups.len();
            groups.push((dir, Vec::new()));
        }
        groups[group_of_dir[dir]].1.push(index);
    }
    groups
}

fn check_group(
    root: &Path,
    manifest: &Manifest,
    dir: usize,
    children: &[usize],
    level: Level,
    buffer: &mut Vec<u8>,
) -> Result<(), String> {
    let dir_entry = &manifest.entries[dir];
    let dir_path = entry_path(root, dir_entry);
    let shown = |entry: &Entry| String::from_utf8_lossy(&entry.path).into_owned();
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(&dir_path)
        .map_err(|e| format!("{:?}: cannot open directory: {e}", shown(dir_entry)))?;
    for &index in children {
        let entry = &manifest.entries[index];
        let checked = if index == 0 {
            // The root is looked up from its parent, so a root swapped for a link shows.
            let cache_dir = root.parent().unwrap_or(Path::new("/"));
            let name = root.file_name().map_or(&b""[..], |n| n.as_bytes());
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_DIRECTORY)
                .open(cache_dir)
                .map_err(|e| format!("cannot open the cache directory: {e}"))
                .and_then(|parent| check_entry(manifest, entry, &parent, name))
        } else {
            let name = &entry.path[parent(&entry.path).len()..];
            check_entry(
                manifest,
                entry,
                &handle,
                name.strip_prefix(b"/").unwrap_or(name),
            )
        };
        checked.map_err(|why| format!("{:?}: {why}", shown(entry)))?;
        if let (Level::Full, EntryKind::File { sha256, .. }) = (level, &entry.kind) {
            let actual = hash_file(&entry_path(root, entry), buffer)
                .map_err(|e| format!("{:?}: {e}", shown(entry)))?;
            if &actual != sha256 {
                return Err(format!("{:?}: content differs", shown(entry)));
            }
        }
    }
    Ok(())
}

/// Compares `name` inside the open directory `dir` with what `entry` records.
fn check_entry(manifest: &Manifest, entry: &Entry, dir: &File, name: &[u8]) -> Result<(), String> {
    let stat = sys::lstat_at(dir, name).map_err(|e| e.to_string())?;
    // A hardlink must look exactly like the file it links to.
    let expected = match entry.kind {
        EntryKind::Hardlink { target } => &manifest.entries[target as usize],
        _ => entry,
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    let want = match expected.kind {
        EntryKind::Dir => SFlag::S_IFDIR,
        EntryKind::File { .. } | EntryKind::Hardlink { .. } => SFlag::S_IFREG,
        EntryKind::Symlink { .. } => SFlag::S_IFLNK,
    };
    if kind != want {
        return Err("its type changed".into());
    }
    if want != SFlag::S_IFLNK && stat.st_mode & 0o7777 != expected.mode {
        return Err(format!(
            "mode {:o}, expected {:o}",
            stat.st_mode & 0o7777,
            expected.mode
        ));
    }
    if let EntryKind::File { size, .. } = expected.kind {
        if stat.st_size as u64 != size {
            return Err(format!("size {}, expected {size}", stat.st_size));
        }
    }
    if (stat.st_mtime, stat.st_mtime_nsec as u32) != (expected.mtime.sec, expected.mtime.nsec) {
        return Err("its mtime changed".into());
    }
    if let EntryKind::Symlink { target } = &expected.kind {
        let actual = nix::fcntl::readlinkat(std::os::fd::AsFd::as_fd(dir), name)
            .map_err(|e| e.to_string())?;
        if actual.as_bytes() != target.as_slice() {
            return Err("its link target changed".into());
        }
    }
    Ok(())
}

/// SHA-256 of a file's contents, read through `buffer`; refuses to follow a link.
pub fn hash_file(path: &Path, buffer: &mut Vec<u8>) -> io::Result<[u8; 32]> {
    buffer.resize(256 * 1024, 0);
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n]);
    }
}
