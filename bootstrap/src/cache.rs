//! The cache directory: where extracted trees live between inits, and the rules that
//! keep a dirty `/tmp` from fooling the bootstrap.
//!
//! Everything coldpack puts there for a payload named `NAME` starts with
//! `coldpack-NAME.`, and names never contain a `.`, so one name's files are told
//! apart from another's and from everything coldpack did not create:
//!
//! ```text
//! coldpack-NAME.lock                 flock'd by the bootstrap deciding; never removed
//! coldpack-NAME.<id>                 the extracted tree, {root}
//! coldpack-NAME.<id>.complete        the completion marker, written last
//! coldpack-NAME.<id>.staging-<pid>   a tree being extracted
//! coldpack-NAME.trash-<pid>-<n>      a stale or damaged tree renamed out of the way
//! coldpack-NAME.cleanup              trash may be left: the warm path must delete it
//! ```
//!
//! `<id>` is the first 16 hex digits of the payload's identity. The marker holds the
//! full identity and the tree's device and inode, so a tree swapped for another after
//! it was marked is not taken for the one that was checked.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{EntryKind, Manifest};
use crate::payload::hex;
use crate::sys;

/// Lambda's `/tmp` block size; files are rounded up to it when counting space.
const BLOCK: u64 = 4096;

pub struct Cache {
    pub dir: PathBuf,
    /// `coldpack-NAME.`: the prefix of everything this payload's name owns.
    prefix: String,
    id: String,
    /// The extracted tree, `{root}` for the launch.
    pub root: PathBuf,
    marker: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path, name: &str, id: &[u8; 32]) -> Cache {
        let prefix = format!("coldpack-{name}.");
        let id = hex(id);
        let root = dir.join(format!("{prefix}{}", &id[..16]));
        let marker = dir.join(format!("{prefix}{}.complete", &id[..16]));
        Cache {
            dir: dir.to_owned(),
            prefix,
            id,
            root,
            marker,
        }
    }

    fn unusable(&self, what: &str, path: &Path, e: io::Error) -> Error {
        Error::io(ErrorKind::CacheDir, what, path, e)
    }

    /// Takes this name's lock, waiting for a bootstrap that holds it (one that is
    /// extracting); the kernel drops it when the holder exits or is killed.
    pub fn lock(&self) -> Result<sys::Lock> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => {}
            // A handler that cleans `/tmp` with `rm -rf /tmp/*` also removes a cache
            // directory inside it; every later init in the sandbox would fail if it
            // were not made again, as `mkdir -p` would.
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&self.dir)
                .map_err(|e| self.unusable("cannot create cache directory", &self.dir, e))?,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::CacheDir,
                    format!(
                        "cache directory {} is not a directory: point COLDPACK_CACHE_DIR at a writable directory",
                        self.dir.display()
                    ),
                ))
            }
            Err(e) => return Err(self.unusable("cannot use cache directory", &self.dir, e)),
        }
        let path = self.dir.join(format!("{}lock", self.prefix));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| self.unusable("cannot open lock file", &path, e))?;
        sys::lock_exclusive(file).map_err(|e| self.unusable("cannot lock", &path, e))
    }

    /// Whether the tree is there and marked complete for this payload; if not, why.
    pub fn check_marker(&self) -> std::result::Result<(), String> {
        let mut text = String::new();
        // O_NONBLOCK: opening a FIFO planted under the marker's name would otherwise
        // wait for a writer forever; only a small regular file can be a marker.
        let marker = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.marker)
            .and_then(|file| {
                if !file.metadata()?.is_file() {
                    return Err(io::ErrorKind::InvalidData.into());
                }
                file.take(256).read_to_string(&mut text)
            });
        let root = fs::symlink_metadata(&self.root);
        match (marker, &root) {
            (Err(_), Err(_)) => return Err(format!("no extracted copy in {}", self.dir.display())),
            (Err(_), Ok(_)) => return Err("the extracted copy has no completion marker".into()),
            (Ok(_), Err(_)) => return Err("the marked copy is gone".into()),
            (Ok(_), Ok(_)) => {}
        }
        let root = root.map_err(|e| e.to_string())?;
        if !root.is_dir() {
            return Err("the extracted copy is no longer a directory".into());
        }
        if text != self.marker_text(root.dev(), root.ino()) {
            return Err("the completion marker does not match this payload and tree".into());
        }
        Ok(())
    }

    fn marker_text(&self, dev: u64, ino: u64) -> String {
        format!("{}\n{dev}:{ino}\n", self.id)
    }

    /// Moves everything this name owns out of the way, except the lock: markers and
    /// loose files are deleted, trees (old versions, staging leftovers, a damaged copy
    /// of this one) are renamed to trash names and returned, for the caller to delete
    /// when it suits. The marker goes first, so a sweep cut short never leaves a
    /// marker without the tree it vouched for.
    pub fn sweep(&self) -> Result<Vec<PathBuf>> {
        let _ = fs::remove_file(&self.marker);
        let owned = self.owned()?;
        let mut trash = Vec::new();
        let mut n = 0;
        for (name, is_dir) in &owned {
            let path = self.dir.join(name);
            if !is_dir {
                fs::remove_file(&path).map_err(|e| self.unusable("cannot remove", &path, e))?;
            } else if name[self.prefix.len()..].starts_with("trash-") {
                trash.push(path);
            } else {
                // Lambda gives the bootstrap the same pid at every init of a sandbox,
                // so a killed start's trash can carry this start's pid: skip the names
                // it left, or the rename would fail (or replace an empty one).
                let moved = loop {
                    let name = format!("{}trash-{}-{n}", self.prefix, std::process::id());
                    n += 1;
                    if !owned.iter().any(|(taken, _)| *taken == name) {
                        break self.dir.join(name);
                    }
                };
                fs::rename(&path, &moved)
                    .map_err(|e| self.unusable("cannot move aside", &path, e))?;
                trash.push(moved);
            }
        }
        Ok(trash)
    }

    /// The names this payload's name owns in the cache directory, except the lock,
    /// with whether each is a directory (never following a link). Listed in full
    /// before anything is renamed, so a rename cannot show up again in the listing.
    fn owned(&self) -> Result<Vec<(String, bool)>> {
        let lock = format!("{}lock", self.prefix);
        let listing =
            fs::read_dir(&self.dir).map_err(|e| self.unusable("cannot list", &self.dir, e))?;
        let mut owned = Vec::new();
        for item in listing {
            let item = item.map_err(|e| self.unusable("cannot list", &self.dir, e))?;
            let name = item.file_name();
            if let Some(name) = name
                .to_str()
                .filter(|n| n.starts_with(&self.prefix) && *n != lock)
            {
                owned.push((name.to_owned(), item.file_type().is_ok_and(|t| t.is_dir())));
            }
        }
        Ok(owned)
    }

    /// `coldpack-NAME.cleanup`: present while trash moved aside by a cold start may
    /// still be there. A start killed while deleting it leaves a marked tree beside
    /// its trash; the warm path that follows never sweeps, so without this flag the
    /// trash would stay for the sandbox's life.
    fn cleanup_flag(&self) -> PathBuf {
        self.dir.join(format!("{}cleanup", self.prefix))
    }

    /// Raises the flag before trash is left behind by anything but a finished start.
    pub fn cleanup_pending(&self) {
        let _ = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // Never through a planted link, never blocked by a planted FIFO.
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(self.cleanup_flag());
    }

    /// Deletes `trash`, then lowers the flag.
    pub fn clean_up(&self, trash: &mut Vec<PathBuf>) -> Result<()> {
        remove_all(trash)?;
        let _ = fs::remove_file(self.cleanup_flag());
        Ok(())
    }

    /// On the warm path: if the flag is up, deletes everything this name owns beside
    /// the reused tree and its marker (what a killed start was deleting). One `lstat`
    /// otherwise; failures are left for the next start.
    pub fn remove_leftovers(&self) {
        let flag = self.cleanup_flag();
        if fs::symlink_metadata(&flag).is_err() {
            return;
        }
        let Ok(owned) = self.owned() else { return };
        let keep = [
            self.root.file_name(),
            self.marker.file_name(),
            flag.file_name(),
        ];
        for (name, _) in owned {
            if !keep.contains(&Some(std::ffi::OsStr::new(&name))) {
                let _ = remove_tree(&self.dir.join(name));
            }
        }
        let _ = fs::remove_file(&flag);
    }

    /// Fails before anything is written if the tree cannot fit; deletes `trash` first
    /// when only that would make it fit.
    pub fn ensure_space(&self, manifest: &Manifest, trash: &mut Vec<PathBuf>) -> Result<()> {
        let need = Need::of(manifest);
        loop {
            let free = sys::free_space(&self.dir)
                .map_err(|e| self.unusable("cannot measure free space of", &self.dir, e))?;
            if free.bytes >= need.bytes && free.inodes >= need.inodes {
                return Ok(());
            }
            if trash.is_empty() {
                return Err(no_space(&self.dir, manifest));
            }
            remove_all(trash)?;
        }
    }

    pub fn staging(&self) -> PathBuf {
        let mut name = OsString::from(self.root.as_os_str());
        name.push(format!(".staging-{}", std::process::id()));
        PathBuf::from(name)
    }

    /// Renames the finished `staging` tree into place, then marks it complete.
    pub fn publish(&self, staging: &Path) -> Result<()> {
        fs::rename(staging, &self.root)
            .map_err(|e| self.unusable("cannot rename into place", &self.root, e))?;
        let root = fs::symlink_metadata(&self.root)
            .map_err(|e| self.unusable("cannot stat", &self.root, e))?;
        let mut pending = OsString::from(self.marker.as_os_str());
        pending.push(".pending");
        let pending = PathBuf::from(pending);
        // create_new (O_EXCL) never follows a link planted under the pending name.
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&pending)
            .and_then(|mut file| {
                file.write_all(self.marker_text(root.dev(), root.ino()).as_bytes())
            });
        written
            .and_then(|()| fs::rename(&pending, &self.marker))
            .map_err(|e| {
                // A tree that cannot be marked (a full disk) is only taking space.
                let _ = fs::remove_file(&pending);
                let _ = remove_tree(&self.root);
                self.unusable("cannot write completion marker", &self.marker, e)
            })
    }
}

/// What a tree takes on disk: blocks for contents and directories, one inode an entry.
struct Need {
    bytes: u64,
    inodes: u64,
}

impl Need {
    fn of(manifest: &Manifest) -> Need {
        let bytes: u64 = manifest
            .entries
            .iter()
            .map(|entry| match &entry.kind {
                EntryKind::File { size, .. } => size.div_ceil(BLOCK) * BLOCK,
                EntryKind::Dir => BLOCK,
                // ext4 keeps a target under 60 bytes in the inode, tmpfs under 128;
                // a longer one takes a block of its own.
                EntryKind::Symlink { target } if target.len() >= 60 => BLOCK,
                EntryKind::Symlink { .. } | EntryKind::Hardlink { .. } => 0,
            })
            .sum();
        // One more file and block for the completion marker, written last: a tree
        // that fits exactly would otherwise be extracted, then thrown away.
        Need {
            bytes: bytes + BLOCK,
            inodes: manifest.entries.len() as u64 + 1,
        }
    }
}

/// The message for a tree that does not fit, before or during extraction: the numbers
/// and the Lambda setting that fixes it. The filesystem's size is the function's
/// ephemeral storage, so the suggestion is that size plus what is missing, rounded up
/// to a 512 MB step (Lambda takes 512 to 10240 MB).
pub fn no_space(dir: &Path, manifest: &Manifest) -> Error {
    const MB: u64 = 1024 * 1024;
    let wanted = Need::of(manifest);
    let need = wanted.bytes;
    let (free, total, inodes) =
        sys::free_space(dir).map_or((0, 0, 0), |f| (f.bytes, f.total, f.inodes));
    // On a disk with bytes to spare, the files (inodes) are what runs out.
    let (need_text, free_text) = if free >= need && inodes < wanted.inodes {
        (
            format!("{} files", wanted.inodes),
            format!("{inodes} are free"),
        )
    } else {
        (format!("{need} bytes"), format!("{free} are free"))
    };
    let suggest = (total + need.saturating_sub(free)).div_ceil(512 * MB) * 512 + 512;
    let remedy = if suggest <= 10240 {
        format!("raise the function's ephemeral storage to {suggest} MB (EphemeralStorage)")
    } else {
        "the tree exceeds Lambda's largest ephemeral storage (10240 MB): make it smaller".into()
    };
    Error::new(
        ErrorKind::NoSpace,
        format!(
            "not enough space in {} for the runtime: it needs {need_text} and {free_text}; {remedy}",
            dir.display(),
        ),
    )
}

/// Deletes each path in `trash` and empties the list.
pub fn remove_all(trash: &mut Vec<PathBuf>) -> Result<()> {
    for path in trash.drain(..) {
        remove_tree(&path)
            .map_err(|e| Error::io(ErrorKind::CacheDir, "cannot remove", &path, e))?;
    }
    Ok(())
}

/// Removes a tree that may hold read-only directories, which `remove_dir_all` cannot
/// empty as an unprivileged user: on a permission error, give every directory its
/// owner's write bit back (never following a link) and try again.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for item in fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            make_writable(&item.path())?;
        }
    }
    Ok(())
}
