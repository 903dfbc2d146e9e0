//! Writing the task part beside the bootstrap, and checking one that was written.
//!
//! The kept files are copied into a temporary directory in OUT-DIR and hashed in the
//! same read, because the task part's directory is named after the payload's identity,
//! which covers the hashes: the directory is renamed to `coldpack-NAME.<id>` only once
//! the whole output is known to fit. Files keep their mode and mtime, directories get
//! mode 0755 (what Lambda's zip deployment gives them), whatever the umask, and their
//! mtime last.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use coldpack_bootstrap::manifest::{Manifest, Mtime};
use coldpack_bootstrap::task::{TaskEntry, TaskIndex};
use sha2::{Digest, Sha256};

use crate::parallel_map;

/// The indexes of the `/tmp` tree's links into the task part: what a cold start
/// makes without writing any contents, counted apart from what it extracts.
pub fn links(manifest: &Manifest) -> impl Iterator<Item = usize> + '_ {
    (0..manifest.len()).filter(|&i| manifest.kind(i).is_task())
}

/// A task part written under a temporary name, removed on drop unless committed.
pub struct Staged {
    pub index: TaskIndex,
    dir: PathBuf,
    committed: bool,
}

/// Copies the kept files `task` lists into a new temporary directory in `out`.
pub fn stage(task: &[(TaskEntry, PathBuf)], out: &Path) -> Result<Staged> {
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let dir = out.join(format!(".coldpack-task.{}", std::process::id()));
    let _ = coldpack_bootstrap::cache::remove_tree(&dir);
    create_dir(&dir)?;
    let mut staged = Staged {
        index: TaskIndex::default(),
        dir,
        committed: false,
    };
    for (entry, _) in task.iter().filter(|(e, _)| e.dir) {
        create_dir(&staged.dir.join(as_path(&entry.path)))?;
    }
    let hashes = parallel_map(task.len(), |i| {
        let (entry, source) = &task[i];
        if entry.dir {
            return Ok([0; 32]);
        }
        copy_hashed(source, &staged.dir.join(as_path(&entry.path)), entry)
    })?;
    let mut entries = Vec::with_capacity(task.len());
    for ((entry, _), sha256) in task.iter().zip(hashes) {
        entries.push(TaskEntry {
            sha256,
            ..entry.clone()
        });
    }
    // Directories last, deepest first: writing into one changes its mtime.
    for entry in entries.iter().rev().filter(|e| e.dir) {
        let path = staged.dir.join(as_path(&entry.path));
        set_mtime(&path, entry.mtime)
            .with_context(|| format!("cannot set the mtime of {}", path.display()))?;
    }
    staged.index = TaskIndex { entries };
    Ok(staged)
}

impl Staged {
    /// Renames the task part to `out/name`, replacing what is there.
    pub fn commit(mut self, out: &Path, name: &str) -> Result<PathBuf> {
        let target = out.join(name);
        coldpack_bootstrap::cache::remove_tree(&target)
            .with_context(|| format!("cannot replace {}", target.display()))?;
        fs::rename(&self.dir, &target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.dir.display(),
                target.display()
            )
        })?;
        self.committed = true;
        Ok(target)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = coldpack_bootstrap::cache::remove_tree(&self.dir);
        }
    }
}

/// A directory of mode 0755 whatever the umask: the function runs as another user
/// than the files' owner, and a deployment made from OUT-DIR as it is (not through
/// the zip) must let it in.
fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("cannot create {}", path.display()))
}

fn as_path(path: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(path))
}

/// Copies `source` to `target` with the entry's mode and mtime; returns its SHA-256.
fn copy_hashed(source: &Path, target: &Path, entry: &TaskEntry) -> Result<[u8; 32]> {
    let copy = || -> io::Result<[u8; 32]> {
        let mut input = File::open(source)?;
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 256 * 1024];
        let mut copied = 0;
        loop {
            let n = input.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            output.write_all(&buffer[..n])?;
            copied += n as u64;
        }
        if copied != entry.size {
            return Err(io::Error::other("its size changed while packing"));
        }
        output.set_permissions(fs::Permissions::from_mode(entry.mode))?;
        drop(output);
        set_mtime(target, entry.mtime)?;
        Ok(hasher.finalize().into())
    };
    copy().map_err(|e| anyhow!("cannot copy {} into the task part: {e}", source.display()))
}

fn set_mtime(path: &Path, mtime: Mtime) -> io::Result<()> {
    let time = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::new(
            mtime.sec.max(0) as u64,
            mtime.nsec,
        ))
        .unwrap_or(std::time::UNIX_EPOCH);
    let file = File::open(path)?;
    file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))
}

/// What differs between the task part at `dir` and `index`: missing, changed and
/// extra entries, by path. Empty when they match.
pub fn check(dir: &Path, index: &TaskIndex) -> Vec<String> {
    let mut problems = Vec::new();
    if !dir.is_dir() {
        if !index.entries.is_empty() {
            problems.push(format!("{} is missing", dir.display()));
        }
        return problems;
    }
    let results = parallel_map(index.entries.len(), |i| {
        Ok(check_entry(dir, &index.entries[i]))
    })
    .unwrap_or_default();
    problems.extend(results.into_iter().flatten());
    let listed: std::collections::HashSet<&[u8]> =
        index.entries.iter().map(|e| e.path.as_slice()).collect();
    let mut found = Vec::new();
    list_all(dir, Vec::new(), &mut found);
    for path in found {
        if !listed.contains(path.as_slice()) {
            problems.push(format!(
                "{} is not part of the payload",
                String::from_utf8_lossy(&path)
            ));
        }
    }
    problems
}

fn check_entry(dir: &Path, entry: &TaskEntry) -> Option<String> {
    let shown = String::from_utf8_lossy(&entry.path);
    let path = dir.join(as_path(&entry.path));
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{shown}: {e}")),
    };
    if meta.is_dir() != entry.dir || (!entry.dir && !meta.is_file()) {
        return Some(format!("{shown}: its type differs"));
    }
    if meta.mode() & 0o7777 != entry.mode {
        return Some(format!(
            "{shown}: mode {:o}, packed {:o}",
            meta.mode() & 0o7777,
            entry.mode
        ));
    }
    if entry.dir {
        return None;
    }
    if meta.len() != entry.size {
        return Some(format!(
            "{shown}: size {}, packed {}",
            meta.len(),
            entry.size
        ));
    }
    let hashed = File::open(&path).and_then(|mut file| {
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        Ok(<[u8; 32]>::from(hasher.finalize()))
    });
    match hashed {
        Ok(sha256) if sha256 == entry.sha256 => None,
        Ok(_) => Some(format!("{shown}: its contents differ")),
        Err(e) => Some(format!("{shown}: {e}")),
    }
}

fn list_all(root: &Path, prefix: Vec<u8>, found: &mut Vec<Vec<u8>>) {
    let Ok(listing) = fs::read_dir(root.join(as_path(&prefix))) else {
        return;
    };
    for item in listing.flatten() {
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(item.file_name().as_bytes());
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        found.push(path.clone());
        if is_dir {
            list_all(root, path, found);
        }
    }
}
