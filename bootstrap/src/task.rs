//! The task part: the share of the tree kept as plain files in the deployment, next
//! to the bootstrap (`/var/task`, or `/opt` for a layer), instead of in the payload.
//!
//! Lambda puts the deployment in place before init, read-only, at no cost to the init,
//! so whatever its zip can carry intact (plain files and directories with ordinary
//! modes) is best left there. The payload's tree reaches it through symlinks: a kept
//! directory or file is a [`Kind::TaskDir`](crate::manifest::Kind) or `TaskFile`
//! entry, made at extraction as a link to the same path under the task part's
//! directory, `coldpack-NAME.<id>` beside the bootstrap (the same name as the tree in
//! the cache directory, so a task part from another pack is never taken for this one).
//!
//! The [`TaskIndex`] lists every kept file with its mode, size and SHA-256; it is a
//! section of the payload, so the payload's identity covers it, but only the tools
//! read it (`coldpack verify` checks the kept files against it). At start the
//! bootstrap trusts Lambda's read-only storage for contents and only checks that each
//! kept entry is there ([`check`]): a bootstrap deployed without its task part is
//! refused before anything runs.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{self, OFlag};
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, ErrorKind, Result};
use crate::launch::check_path;
use crate::manifest::{Kind, Manifest, Mtime};
use crate::payload::hex;
use crate::sys;
use crate::wire::{Reader, Writer};

/// `coldpack-NAME.<first 16 hex digits of the payload's identity>`.
pub fn dir_name(name: &str, id: &[u8; 32]) -> String {
    format!("coldpack-{name}.{}", &hex(id)[..16])
}

/// The task part's directory beside the bootstrap at `exe`.
pub fn locate(exe: &Path, name: &str, id: &[u8; 32]) -> PathBuf {
    exe.parent()
        .unwrap_or(Path::new("/"))
        .join(dir_name(name, id))
}

/// One kept file or directory, by its path in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEntry {
    pub path: Vec<u8>,
    pub dir: bool,
    pub mode: u32,
    pub mtime: Mtime,
    pub size: u64,
    /// SHA-256 of a file's contents; zeros for a directory.
    pub sha256: [u8; 32],
}

/// Everything under the task part's directory, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskIndex {
    pub entries: Vec<TaskEntry>,
}

/// Smallest encoded entry: kind, mode, mtime, size, hash, empty path.
const MIN_TASK_ENTRY: usize = 1 + 4 + 8 + 4 + 8 + 32 + 4;

impl TaskIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.entries.len() as u32);
        for entry in &self.entries {
            w.u8(u8::from(entry.dir));
            w.u32(entry.mode);
            w.i64(entry.mtime.sec);
            w.u32(entry.mtime.nsec);
            w.u64(entry.size);
            w.raw(&entry.sha256);
            w.blob(&entry.path);
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskIndex> {
        let mut r = Reader::new(bytes, "task index");
        let count = r.count(MIN_TASK_ENTRY)?;
        let mut entries: Vec<TaskEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = TaskEntry {
                dir: match r.u8()? {
                    0 => false,
                    1 => true,
                    code => {
                        return Err(Error::corrupt(format!(
                            "task index has an unknown entry type {code}"
                        )))
                    }
                },
                mode: r.u32()?,
                mtime: Mtime {
                    sec: r.i64()?,
                    nsec: r.u32()?,
                },
                size: r.u64()?,
                sha256: r.array()?,
                path: r.blob()?.to_vec(),
            };
            let shown = String::from_utf8_lossy(&entry.path).into_owned();
            check_path(&entry.path)
                .map_err(|why| Error::corrupt(format!("task index entry {shown:?} {why}")))?;
            if entries.last().is_some_and(|last| last.path >= entry.path) {
                return Err(Error::corrupt(format!(
                    "task index entry {shown:?} is out of order"
                )));
            }
            entries.push(entry);
        }
        r.finish()?;
        Ok(TaskIndex { entries })
    }

    /// Bytes of file contents kept.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| !e.dir).count()
    }
}

fn missing(task_dir: &Path, why: String) -> Error {
    Error::new(
        ErrorKind::TaskPart,
        format!(
            "{why}: the deployment lacks the task part {} that this bootstrap was packed with; deploy all of coldpack's output (the function.zip or layer.zip it wrote, or the bootstrap with its coldpack-* directory)",
            task_dir.display()
        ),
    )
}

/// Checks that every entry the manifest keeps in the task part is there, of the right
/// type, at start: one `fstatat` each.
pub fn check(task_dir: &Path, manifest: &Manifest) -> Result<()> {
    let mut kept = (1..manifest.len())
        .filter(|&i| manifest.kind(i).is_task())
        .peekable();
    if kept.peek().is_none() {
        return Ok(());
    }
    let dir = open(task_dir)?;
    for index in kept {
        let path = manifest.path(index);
        let want = if manifest.kind(index) == Kind::TaskDir {
            SFlag::S_IFDIR
        } else {
            SFlag::S_IFREG
        };
        let found = stat_type(&dir, &path);
        if found.as_ref().ok() != Some(&want) {
            let why = match found {
                Ok(_) => "is not what was packed".to_owned(),
                Err(e) => e.to_string(),
            };
            let shown = String::from_utf8_lossy(&path);
            return Err(missing(task_dir, format!("{shown} {why}")));
        }
    }
    Ok(())
}

/// The task part's directory, open: the check a start whose whole tree is kept there
/// makes before it runs anything from it.
pub fn open(task_dir: &Path) -> Result<File> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    fcntl::open(task_dir, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| missing(task_dir, format!("cannot open {}: {e}", task_dir.display())))
}

fn stat_type(dir: &File, path: &[u8]) -> io::Result<SFlag> {
    let stat = sys::lstat_at(dir, path)?;
    Ok(SFlag::from_bits_truncate(
        stat.st_mode & SFlag::S_IFMT.bits(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file() -> TaskIndex {
        TaskIndex {
            entries: vec![TaskEntry {
                path: b"lib/conf.ini".to_vec(),
                dir: false,
                mode: 0o644,
                mtime: Mtime { sec: 1, nsec: 2 },
                size: 5,
                sha256: [7; 32],
            }],
        }
    }

    #[test]
    fn task_index_round_trips() {
        let index = one_file();
        assert_eq!(TaskIndex::decode(&index.encode()).unwrap(), index);
    }

    /// Found by fuzzing: any non-zero type byte was read as a directory, so two
    /// different sections decoded to the same index.
    #[test]
    fn unknown_entry_type_is_refused() {
        let mut bytes = one_file().encode();
        bytes[4] = 2; // the first entry's type, after the count
        let err = TaskIndex::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("unknown entry type 2"), "{err}");
    }
}
