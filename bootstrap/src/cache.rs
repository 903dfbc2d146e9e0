//! The cache directory: where extracted trees live between inits, and the rules that
//! keep a dirty `/tmp` from fooling the bootstrap.
//!
//! Everything coldpack puts there for a payload named `NAME` starts with
//! `coldpack-NAME.`, and names never contain a `.`, so one name's files are told
//! apart from another's and from everything coldpack did not create:
//!
//! ```text
//! coldpack-NAME.lock                  flock'd by the start deciding; never removed
//! coldpack-NAME.<id>                  the extracted tree, {root}
//! coldpack-NAME.<id>.complete         the completion marker, written last
//! coldpack-NAME.<id>.staging          a tree being extracted (resumable, see `staging`)
//! coldpack-NAME.<id>.progress         the chunks written into staging so far
//! coldpack-NAME.trash-<pid>-<n>       a stale or damaged tree moved out of the way
//! coldpack-NAME.cleanup               trash may be left: the warm path must delete it
//! ```
//!
//! `<id>` is the first 16 hex digits of the payload's identity. The marker holds the
//! full identity, the tree's device, inode and change time (ctime) at publication, and
//! the task part's directory, so a tree swapped for another, even one that got the same
//! inode number back, or one whose links point at another deployment, is not taken for
//! the one that was checked.
//!
//! A runtime holds a shared `flock` on its tree's directory from before the exec for as
//! long as it runs (the descriptor is inherited), and no tree that anyone holds so is
//! ever moved or deleted: two payloads of one name sharing a cache directory (parallel
//! local runs, a cache on EFS) cannot sweep each other's tree from under a runtime.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::Mtime;
use crate::payload::hex;
use crate::space::Need;
use crate::staging::Staging;
use crate::sys;

/// How long a start waits for another one holding the name's lock. An extraction
/// that legitimately holds it longer is rare outside a shared cache directory; a
/// stopped or frozen holder, or a lock on a filesystem that never answers, must not
/// run the init into Lambda's 10 s limit with nothing said.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

pub struct Cache {
    pub dir: PathBuf,
    /// `coldpack-NAME.`: the prefix of everything this payload's name owns.
    prefix: String,
    pub id: [u8; 32],
    /// The extracted tree, `{root}` for the launch.
    pub root: PathBuf,
    marker: PathBuf,
    /// Where links into the task part point.
    task_dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path, name: &str, id: &[u8; 32], task_dir: &Path) -> Cache {
        let prefix = format!("coldpack-{name}.");
        let tree = format!("{prefix}{}", &hex(id)[..16]);
        Cache {
            dir: dir.to_owned(),
            root: dir.join(&tree),
            marker: dir.join(format!("{tree}.complete")),
            prefix,
            id: *id,
            task_dir: task_dir.to_owned(),
        }
    }

    pub fn unusable(&self, what: &str, path: &Path, e: io::Error) -> Error {
        Error::io(ErrorKind::CacheDir, what, path, e)
    }

    fn beside_root(&self, suffix: &str) -> PathBuf {
        let mut name = OsString::from(self.root.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    }

    pub fn staging(&self) -> PathBuf {
        self.beside_root(".staging")
    }

    pub fn progress(&self) -> PathBuf {
        self.beside_root(".progress")
    }

    /// The tree's name in the cache directory.
    pub fn root_name(&self) -> &[u8] {
        self.root.file_name().map_or(&b""[..], |n| n.as_bytes())
    }

    /// The cache directory, open for lookups relative to it.
    pub fn open_dir(&self) -> Result<std::fs::File> {
        sys::open_dir(nix::fcntl::AT_FDCWD, self.dir.as_os_str().as_bytes())
            .map_err(|e| self.unusable("cannot open", &self.dir, e))
    }

    /// Takes this name's lock, waiting up to [`LOCK_WAIT`] for a start that holds it;
    /// the kernel drops it when the holder exits or is killed.
    pub fn lock(&self) -> Result<sys::Lock> {
        self.ensure_dir()?;
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
        sys::lock_until(file, Instant::now() + LOCK_WAIT)
            .map_err(|e| self.unusable("cannot lock", &path, e))?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::LockTimeout,
                    format!(
                        "the cache lock {} was held by another start for over {} s (a stopped or frozen process, or a cache directory on a filesystem whose locks hang); nothing was changed: retry, or point COLDPACK_CACHE_DIR at a local directory",
                        path.display(),
                        LOCK_WAIT.as_secs()
                    ),
                )
            })
    }

    fn ensure_dir(&self) -> Result<()> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            // A handler that cleans `/tmp` with `rm -rf /tmp/*` also removes a cache
            // directory inside it; every later init in the sandbox would fail if it
            // were not made again, as `mkdir -p` would.
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&self.dir)
                .map_err(|e| self.unusable("cannot create cache directory", &self.dir, e)),
            Ok(_) => Err(Error::new(
                ErrorKind::CacheDir,
                format!(
                    "cache directory {} is not a directory: point COLDPACK_CACHE_DIR at a writable directory",
                    self.dir.display()
                ),
            )),
            Err(e) => Err(self.unusable("cannot use cache directory", &self.dir, e)),
        }
    }

    /// Whether the tree is there and marked complete for this payload; if so, when it
    /// was published (the watermark of the `stat` check), if not, why.
    pub fn check_marker(&self) -> std::result::Result<Mtime, String> {
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
                file.take(8192).read_to_string(&mut text)
            });
        let root = fs::symlink_metadata(&self.root);
        let root = match (marker, root) {
            (Err(_), Err(_)) => return Err(format!("no extracted copy in {}", self.dir.display())),
            (Err(_), Ok(_)) => return Err("the extracted copy has no completion marker".into()),
            (Ok(_), Err(_)) => return Err("the marked copy is gone".into()),
            (Ok(_), Ok(root)) => root,
        };
        if !root.is_dir() {
            return Err("the extracted copy is no longer a directory".into());
        }
        let published = Mtime {
            sec: root.ctime(),
            nsec: root.ctime_nsec() as u32,
        };
        if text != self.marker_text(root.dev(), root.ino(), published) {
            return Err(
                "the completion marker does not match this payload, tree and deployment".into(),
            );
        }
        Ok(published)
    }

    fn marker_text(&self, dev: u64, ino: u64, published: Mtime) -> String {
        format!(
            "{}\n{dev}:{ino}:{}.{:09}\n{}\n",
            hex(&self.id),
            published.sec,
            published.nsec,
            self.task_dir.display()
        )
    }

    /// Moves everything this name owns out of the way, except the lock, this payload's
    /// staging and progress record (which a start may continue), and trees a runtime
    /// is using: markers and loose files are deleted, trees (old versions, a damaged
    /// copy of this one) are renamed to trash names and returned, for the caller to
    /// delete when it suits. The marker goes first, so a sweep cut short never leaves
    /// a marker without the tree it vouched for.
    pub fn sweep(&self) -> Result<Vec<PathBuf>> {
        let _ = fs::remove_file(&self.marker);
        let owned = self.owned()?;
        let keep = [self.staging(), self.progress()];
        let mut trash = Vec::new();
        let mut n = 0;
        for (name, is_dir) in &owned {
            let path = self.dir.join(name);
            if keep.contains(&path) {
                continue;
            }
            if !is_dir {
                fs::remove_file(&path).map_err(|e| self.unusable("cannot remove", &path, e))?;
            } else if name[self.prefix.len()..].starts_with("trash-") {
                trash.push(path);
            } else if in_use(&path) {
                if path == self.root {
                    return Err(Error::new(
                        ErrorKind::CacheDir,
                        format!(
                            "the copy at {} differs from the payload but a running runtime is using it, so it is left alone: stop that runtime, or give each a cache directory of its own",
                            path.display()
                        ),
                    ));
                }
                // Another version a runtime still runs from: a later start removes it.
                self.cleanup_pending();
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

    /// `coldpack-NAME.cleanup`: present while something this name owns may still need
    /// deleting (trash a killed start left, a tree a runtime was using). The warm path
    /// never sweeps, so without this flag such leftovers would stay for the sandbox's
    /// life.
    fn cleanup_flag(&self) -> PathBuf {
        self.dir.join(format!("{}cleanup", self.prefix))
    }

    /// Raises the flag before anything is left behind.
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

    /// Deletes `trash`, then lowers the flag unless a tree in use was left.
    pub fn clean_up(&self, trash: &mut Vec<PathBuf>) -> Result<()> {
        remove_all(trash)?;
        if !self.holds_trees_in_use() {
            let _ = fs::remove_file(self.cleanup_flag());
        }
        Ok(())
    }

    /// Whether a tree of this name other than ours is still in use.
    fn holds_trees_in_use(&self) -> bool {
        self.owned().is_ok_and(|owned| {
            owned.iter().any(|(name, is_dir)| {
                let path = self.dir.join(name);
                *is_dir && path != self.root && in_use(&path)
            })
        })
    }

    /// On the warm path: if the flag is up, deletes everything this name owns beside
    /// the reused tree and its marker that no runtime is using. One `lstat` otherwise;
    /// failures are left for the next start.
    pub fn remove_leftovers(&self) {
        let flag = self.cleanup_flag();
        if fs::symlink_metadata(&flag).is_err() {
            return;
        }
        let Ok(owned) = self.owned() else { return };
        let keep = [self.root.clone(), self.marker.clone(), flag.clone()];
        let mut left = false;
        for (name, _) in owned {
            let path = self.dir.join(name);
            if keep.contains(&path) {
                continue;
            }
            if in_use(&path) {
                left = true;
            } else {
                let _ = remove_tree(&path);
            }
        }
        if !left {
            let _ = fs::remove_file(&flag);
        }
    }

    /// Fails before anything more is written if `need` cannot fit. `held` is the part
    /// of `need` this start has written already (staging and its record), which the
    /// filesystem no longer counts as free. Deletes `trash` first when only that would
    /// make it fit.
    pub fn ensure_space(&self, need: Need, held: Need, trash: &mut Vec<PathBuf>) -> Result<()> {
        loop {
            let free = sys::free_space(&self.dir)
                .map_err(|e| self.unusable("cannot measure free space of", &self.dir, e))?;
            if free.bytes + held.bytes >= need.bytes && free.inodes + held.inodes >= need.inodes {
                return Ok(());
            }
            if trash.is_empty() {
                return Err(no_space(&self.dir, need, held));
            }
            remove_all(trash)?;
        }
    }

    /// Renames the finished staging tree into place, then marks it complete.
    pub fn publish(&self, staging: Staging) -> Result<()> {
        fs::rename(&staging.path, &self.root)
            .map_err(|e| self.unusable("cannot rename into place", &self.root, e))?;
        staging.finish();
        // The rename is the tree's last change: its ctime now is the watermark.
        let root = fs::symlink_metadata(&self.root)
            .map_err(|e| self.unusable("cannot stat", &self.root, e))?;
        let published = Mtime {
            sec: root.ctime(),
            nsec: root.ctime_nsec() as u32,
        };
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
                file.write_all(
                    self.marker_text(root.dev(), root.ino(), published)
                        .as_bytes(),
                )
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

    /// A shared lock on the tree, on a descriptor the exec keeps open: the runtime
    /// holds it as long as it runs, and no start sweeps a tree so held.
    pub fn hold(&self) -> Result<sys::Lock> {
        let held = sys::open_dir_inherited(&self.root)
            .and_then(|dir| sys::try_lock(dir, true))
            .map_err(|e| self.unusable("cannot lock", &self.root, e))?;
        held.ok_or_else(|| {
            Error::new(
                ErrorKind::CacheDir,
                format!("{} is locked by another start", self.root.display()),
            )
        })
    }
}

/// Whether a runtime holds `path` (a tree's directory): a start that holds the name's
/// lock could otherwise take an exclusive lock on it at once.
fn in_use(path: &Path) -> bool {
    let Ok(dir) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    matches!(sys::try_lock(dir, false), Ok(None))
}

/// The message for a tree that does not fit, before or during extraction: what it
/// needs, what is free, what else takes the space, and the Lambda setting that fixes
/// it. The filesystem's size is the function's ephemeral storage (Lambda takes 512 to
/// 10240 MB, in MB of 2^20 bytes), and the advice is sized from the tree's own need.
/// What `held` (part of `need`, already written) takes counts as free.
pub fn no_space(dir: &Path, need: Need, held: Need) -> Error {
    const MB: u64 = 1024 * 1024;
    let (free, total, inodes) = sys::free_space(dir).map_or((0, 0, 0), |f| {
        (f.bytes + held.bytes, f.total, f.inodes + held.inodes)
    });
    // On a disk with bytes to spare, the files (inodes) are what runs out.
    if free >= need.bytes && inodes < need.inodes {
        return Error::new(
            ErrorKind::NoSpace,
            format!(
                "not enough space in {} for the runtime: it needs {} files and {inodes} are free; remove other files from it",
                dir.display(),
                need.inodes
            ),
        );
    }
    let others = total.saturating_sub(free);
    let fits_alone = need.bytes <= total;
    let storage = (need.bytes + others).div_ceil(512 * MB) * 512;
    let remedy = if storage > 10240 {
        "the tree exceeds Lambda's largest ephemeral storage (10240 MB): make it smaller".to_owned()
    } else if fits_alone && others > 0 {
        format!(
            "other files take {} MiB of it: remove them, or raise the function's ephemeral storage to {} MB (EphemeralStorage)",
            others.div_ceil(MB),
            storage.max(512)
        )
    } else {
        format!(
            "raise the function's ephemeral storage to {} MB (EphemeralStorage)",
            storage.max(512)
        )
    };
    Error::new(
        ErrorKind::NoSpace,
        format!(
            "not enough space in {} for the runtime: it needs {} MiB ({} bytes) and {} MiB ({free} bytes) are free; {remedy}",
            dir.display(),
            need.bytes.div_ceil(MB),
            need.bytes,
            free / MB
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
