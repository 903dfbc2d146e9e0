//! The warm path's question: is the tree an earlier init left still the payload's tree?
//!
//! `/tmp` outlives inits, and so does whatever the function's own code did to it. How
//! much to check before reuse is the user's call (`COLDPACK_VERIFY`):
//! - `marker`: the completion marker names this payload and this very directory;
//! - `stat` (default): also every entry's type, mode, size, mtime and link target, so
//!   a deleted, truncated, grown, chmod'ed or swapped entry is caught; directories'
//!   mtimes change when entries are added or removed, so those are caught too;
//! - `full`: also every file's contents, read back in the payload's chunk order and
//!   compared with each chunk's SHA-256 of them, for changes that keep size and mtime.
//!
//! Entries are grouped by directory and each directory is opened once, relative to
//! its parent (each thread keeps the directories on its current path open), so a
//! check is one `fstatat` per entry and one `openat` per directory, each a
//! one-component lookup; runs of directories are spread over the available cores.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{self, OFlag};
use nix::sys::stat::{Mode, SFlag};
use sha2::{Digest, Sha256};

use crate::extract::entry_path;
use crate::manifest::{parent, Entry, EntryKind, Manifest, Piece};
use crate::{parallel, sys};

/// Directories per job: enough that a thread's open path is mostly reused.
const DIRS_PER_JOB: usize = 64;

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
    let cache_dir = open_dir(
        fcntl::AT_FDCWD,
        root.parent()
            .unwrap_or(Path::new("/"))
            .as_os_str()
            .as_bytes(),
    )
    .map_err(|e| format!("cannot open the cache directory: {e}"))?;
    // The root is looked up from the cache directory, so a root swapped for a link
    // shows.
    let root_name = root.file_name().map_or(&b""[..], |n| n.as_bytes());
    check_entry(manifest, &manifest.entries[0], &cache_dir, root_name)
        .map_err(|why| format!("the tree's root: {why}"))?;

    let tree = Tree::new(manifest);
    let jobs = tree.dirs.len().div_ceil(DIRS_PER_JOB);
    let threads = parallel::threads_for(jobs, usize::MAX);
    parallel::run(jobs, threads, Cursor::default, |job, cursor| {
        let end = tree.dirs.len().min((job + 1) * DIRS_PER_JOB);
        for group in job * DIRS_PER_JOB..end {
            let dir = tree.dirs[group] as usize;
            let handle = cursor
                .open(&tree, dir, &cache_dir, root_name)
                .map_err(|e| format!("{:?}: cannot open directory: {e}", shown(manifest, dir)))?;
            for &index in tree.children(group) {
                let entry = &manifest.entries[index as usize];
                check_entry(manifest, entry, handle, tree.name(index as usize))
                    .map_err(|why| format!("{:?}: {why}", shown(manifest, index as usize)))?;
            }
        }
        Ok::<(), String>(())
    })?;
    if level == Level::Full {
        check_contents(root, manifest)?;
    }
    Ok(())
}

/// Reads every chunk's share of the files back from the tree, on every core, and
/// compares it with the SHA-256 the manifest records for it.
fn check_contents(root: &Path, manifest: &Manifest) -> Result<(), String> {
    let plan = manifest.plan();
    let threads = parallel::threads_for(plan.len(), usize::MAX);
    parallel::run(
        plan.len(),
        threads,
        || vec![0; 256 * 1024],
        |index, buffer| {
            let mut hasher = Sha256::new();
            for piece in &plan[index] {
                let path = entry_path(root, &manifest.entries[piece.entry]);
                hash_piece(&path, piece.offset, piece.len, &mut hasher, buffer)
                    .map_err(|e| format!("{:?}: {e}", shown(manifest, piece.entry)))?;
            }
            if <[u8; 32]>::from(hasher.finalize()) != manifest.chunks[index].data_sha256 {
                let at = |piece: Option<&Piece>| {
                    piece.map_or_else(String::new, |p| shown(manifest, p.entry))
                };
                return Err(format!(
                    "contents differ between {:?} and {:?}",
                    at(plan[index].first()),
                    at(plan[index].last())
                ));
            }
            Ok(())
        },
    )
}

/// Feeds `len` bytes of the file at `path`, from `offset`, to `hasher`; refuses to
/// follow a link.
fn hash_piece(
    path: &Path,
    offset: u64,
    len: u64,
    hasher: &mut Sha256,
    buffer: &mut [u8],
) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut done = 0;
    while done < len {
        let want = buffer.len().min((len - done) as usize);
        let n = file.read_at(&mut buffer[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shorter than recorded",
            ));
        }
        hasher.update(&buffer[..n]);
        done += n as u64;
    }
    Ok(())
}

fn shown(manifest: &Manifest, index: usize) -> String {
    String::from_utf8_lossy(&manifest.entries[index].path).into_owned()
}

/// The manifest's entries grouped under the directories holding them: `dirs[g]` holds
/// `children(g)`, in manifest order.
struct Tree<'a> {
    manifest: &'a Manifest,
    parents: Vec<u32>,
    dirs: Vec<u32>,
    /// Entry indices sorted by directory; group `g` is `order[starts[g]..starts[g + 1]]`.
    order: Vec<u32>,
    starts: Vec<usize>,
}

impl<'a> Tree<'a> {
    fn new(manifest: &'a Manifest) -> Tree<'a> {
        // Validation already refused a manifest whose parents are not all listed.
        let parents = manifest.parents().unwrap_or_default();
        let count = manifest.entries.len();
        let mut group_of = vec![u32::MAX; count];
        let mut dirs = Vec::new();
        let mut sizes = Vec::new();
        for &dir in parents.iter().skip(1) {
            let slot = &mut group_of[dir as usize];
            if *slot == u32::MAX {
                *slot = dirs.len() as u32;
                dirs.push(dir);
                sizes.push(0);
            }
            sizes[*slot as usize] += 1;
        }
        let mut starts = Vec::with_capacity(dirs.len() + 1);
        starts.push(0);
        for size in &sizes {
            starts.push(starts.last().copied().unwrap_or(0) + size);
        }
        let mut next = starts.clone();
        let mut order = vec![0; count.saturating_sub(1)];
        for (index, &dir) in parents.iter().enumerate().skip(1) {
            let group = group_of[dir as usize] as usize;
            order[next[group]] = index as u32;
            next[group] += 1;
        }
        Tree {
            manifest,
            parents,
            dirs,
            order,
            starts,
        }
    }

    fn children(&self, group: usize) -> &[u32] {
        &self.order[self.starts[group]..self.starts[group + 1]]
    }

    /// The last component of entry `index`'s path.
    fn name(&self, index: usize) -> &'a [u8] {
        let path = &self.manifest.entries[index].path;
        let name = &path[parent(path).len()..];
        name.strip_prefix(b"/").unwrap_or(name)
    }
}

/// The directories on one thread's current path, root first, each opened from the
/// one before it.
#[derive(Default)]
struct Cursor {
    open: Vec<(usize, File)>,
}

impl Cursor {
    /// Directory entry `dir`, opened without following a link anywhere below the
    /// cache directory.
    fn open(
        &mut self,
        tree: &Tree,
        dir: usize,
        cache_dir: &File,
        root_name: &[u8],
    ) -> io::Result<&File> {
        let mut chain = vec![dir];
        while let Some(&last) = chain.last().filter(|&&d| d != 0) {
            chain.push(tree.parents[last] as usize);
        }
        chain.reverse();
        let kept = self
            .open
            .iter()
            .zip(&chain)
            .take_while(|((open, _), want)| open == *want)
            .count();
        self.open.truncate(kept);
        for &want in &chain[kept..] {
            let (from, name) = match self.open.last() {
                Some((_, parent)) => (parent, tree.name(want)),
                None => (cache_dir, root_name),
            };
            let opened = open_dir(from.as_fd(), name)?;
            self.open.push((want, opened));
        }
        Ok(&self
            .open
            .last()
            .expect("the chain holds at least the root")
            .1)
    }
}

/// Opens directory `name` under `at` for lookups only, never through a link.
fn open_dir<Fd: AsFd>(at: Fd, name: &[u8]) -> io::Result<File> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = fcntl::openat(at, name, flags, Mode::empty())?;
    Ok(File::from(fd))
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
