//! The syscalls std does not offer, in one place, through `nix`.
//!
//! Everything the bootstrap creates, checks or finishes is reached relative to an open
//! directory (`openat`, `mkdirat`, `fstatat`, ...): one name looked up in one directory
//! instead of a path walked from the root, and no link followed on the way. Also the
//! kernel locks that die with their holder, the free space of a filesystem, and the
//! umask.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{self, FchmodatFlags, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, UnlinkatFlags};

use crate::manifest::Mtime;

fn timespec(mtime: Mtime) -> TimeSpec {
    TimeSpec::new(mtime.sec, i64::from(mtime.nsec))
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as nix::libc::mode_t)
}

/// Opens directory `name` under `at` for lookups only, never through a link.
pub fn open_dir<Fd: AsFd>(at: Fd, name: &[u8]) -> io::Result<File> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(fcntl::openat(at, name, flags, Mode::empty())?))
}

pub fn make_dir<Fd: AsFd>(at: Fd, name: &[u8], bits: u32) -> io::Result<()> {
    Ok(stat::mkdirat(at, name, mode(bits))?)
}

/// Creates file `name` under `at` for writing, refusing anything already there, link
/// or not.
pub fn create_file<Fd: AsFd>(at: Fd, name: &[u8], bits: u32) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(fcntl::openat(at, name, flags, mode(bits))?))
}

/// Opens file `name` under `at` for writing, creating it owner-only if it is not
/// there: a file whose pieces other threads, or a killed start, write too. Whatever
/// is found must be a plain file with one name: never through a link, never blocking
/// on a FIFO, never into a file hardlinked from elsewhere.
pub fn open_shared_file<Fd: AsFd>(at: Fd, name: &[u8]) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let not_plain = || {
        io::Error::other(
            "is not a plain file with one name: something other than a bootstrap changed staging",
        )
    };
    // ELOOP: a link; ENXIO: a FIFO without a reader (or a device).
    let file = match fcntl::openat(at, name, flags, mode(0o600)) {
        Ok(fd) => File::from(fd),
        Err(Errno::ELOOP | Errno::ENXIO) => return Err(not_plain()),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(not_plain());
    }
    Ok(file)
}

/// Opens file `name` under `at` for reading, never through a link.
pub fn open_file<Fd: AsFd>(at: Fd, name: &[u8]) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(fcntl::openat(at, name, flags, Mode::empty())?))
}

pub fn symlink_at<Fd: AsFd>(target: &[u8], at: Fd, name: &[u8]) -> io::Result<()> {
    Ok(unistd::symlinkat(target, at, name)?)
}

pub fn link_at<A: AsFd, B: AsFd>(
    from: A,
    from_name: &[u8],
    to: B,
    to_name: &[u8],
) -> io::Result<()> {
    Ok(unistd::linkat(
        from,
        from_name,
        to,
        to_name,
        AtFlags::empty(),
    )?)
}

/// Removes the non-directory `name` under `at`; gone already is fine.
pub fn remove_at<Fd: AsFd>(at: Fd, name: &[u8]) -> io::Result<()> {
    match unistd::unlinkat(at, name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::ENOENT) => Ok(()),
        other => Ok(other?),
    }
}

/// Sets the mode of `name` under `at`, which the caller made itself (a directory:
/// Linux cannot refuse to follow a link here, so this is never used on one).
pub fn chmod_at<Fd: AsFd>(at: Fd, name: &[u8], bits: u32) -> io::Result<()> {
    Ok(stat::fchmodat(
        at,
        name,
        mode(bits),
        FchmodatFlags::FollowSymlink,
    )?)
}

/// Sets access and modification time of `name` under `at`, never of a link's target.
pub fn set_times_at<Fd: AsFd>(at: Fd, name: &[u8], mtime: Mtime) -> io::Result<()> {
    let t = timespec(mtime);
    Ok(stat::utimensat(
        at,
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

/// Sets access and modification time of an open file.
pub fn set_file_times(file: &File, mtime: Mtime) -> io::Result<()> {
    let t = timespec(mtime);
    Ok(stat::futimens(file.as_fd(), &t, &t)?)
}

/// `lstat` of `name` inside the open directory `dir`.
pub fn lstat_at<Fd: AsFd>(dir: Fd, name: &[u8]) -> io::Result<FileStat> {
    Ok(stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
}

/// Sets the process umask and returns the previous one, so that modes recorded in the
/// payload are applied exactly and the runtime still inherits the umask Lambda gave.
pub fn set_umask(mask: u32) -> u32 {
    stat::umask(mode(mask)).bits() as u32
}

/// A `flock` that the kernel releases when the holder dies, however it dies.
pub type Lock = Flock<File>;

/// Takes an exclusive lock on `file`, waiting at most until `deadline`; `Ok(None)`
/// when another holder kept it that long.
pub fn lock_until(file: File, deadline: Instant) -> io::Result<Option<Lock>> {
    let mut file = file;
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((back, Errno::EWOULDBLOCK)) => file = back,
            Err((_, errno)) => return Err(errno.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Takes a lock on `file` if nobody holds a conflicting one; `Ok(None)` otherwise.
pub fn try_lock(file: File, shared: bool) -> io::Result<Option<Lock>> {
    let arg = if shared {
        FlockArg::LockSharedNonblock
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
}

/// Opens directory `path` for a lock that survives `execve`: no close-on-exec, so the
/// runtime holds it for as long as it runs.
pub fn open_dir_inherited(path: &Path) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    Ok(File::from(fcntl::open(path, flags, Mode::empty())?))
}

/// Bytes and inodes an unprivileged process may still use on `path`'s filesystem.
pub struct Free {
    pub bytes: u64,
    pub inodes: u64,
    /// The filesystem's size, which on Lambda is the function's ephemeral storage.
    pub total: u64,
}

pub fn free_space(path: &Path) -> io::Result<Free> {
    let vfs = nix::sys::statvfs::statvfs(path)?;
    Ok(Free {
        bytes: vfs.blocks_available().saturating_mul(vfs.fragment_size()),
        inodes: vfs.files_available(),
        total: vfs.blocks().saturating_mul(vfs.fragment_size()),
    })
}
