//! The few syscalls std does not offer, in one place, through `nix`.
//!
//! Setting a symlink's or a directory's mtime, a kernel lock that dies with its
//! holder, the free space of a filesystem, `lstat` relative to an open directory,
//! and the umask. Everything else in the bootstrap is std.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg, AT_FDCWD};
use nix::sys::stat::{self, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::manifest::Mtime;

fn timespec(mtime: Mtime) -> TimeSpec {
    TimeSpec::new(mtime.sec, i64::from(mtime.nsec))
}

/// Sets access and modification time of `path` itself, never of what a link points to.
pub fn set_mtime(path: &Path, mtime: Mtime) -> io::Result<()> {
    let t = timespec(mtime);
    stat::utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Sets access and modification time of an open file.
pub fn set_file_mtime(file: &File, mtime: Mtime) -> io::Result<()> {
    let t = timespec(mtime);
    stat::futimens(file.as_fd(), &t, &t)?;
    Ok(())
}

/// Sets the process umask and returns the previous one, so that modes recorded in the
/// payload are applied exactly and the runtime still inherits the umask Lambda gave.
pub fn set_umask(mask: u32) -> u32 {
    stat::umask(Mode::from_bits_truncate(mask)).bits()
}

/// An exclusive `flock` that the kernel releases when the holder dies, however it dies.
pub type Lock = Flock<File>;

pub fn lock_exclusive(file: File) -> io::Result<Lock> {
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno.into())
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

/// `lstat` of `name` inside the open directory `dir`: one path lookup instead of one
/// per component, which is what keeps the warm path's stat pass short.
pub fn lstat_at(dir: &File, name: &[u8]) -> io::Result<FileStat> {
    Ok(stat::fstatat(
        dir.as_fd(),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}
