//! The staging directory a tree is extracted into, and the progress record that lets
//! a start killed at Lambda's init limit be resumed instead of started over.
//!
//! An init that runs past 10 s is killed and retried; a tree that takes 12 s to
//! extract on a small function would never start if every retry began again. So the
//! staging directory has a fixed name, `coldpack-NAME.<id>.staging`, and beside it
//! `coldpack-NAME.<id>.progress` records, one line each, the chunks whose files are
//! completely written (a line is appended only after the chunk's last file is closed)
//! and when the directories began to get their final modes. A later start of the same
//! payload keeps the chunks recorded there whose files still look as the manifest says
//! (type, mode, size, mtime: the `stat` level) and writes only the rest. Only
//! bootstraps write staging, under the name's lock, but nothing is trusted unchecked.
//! A record that names another payload, or a staging directory without one, is
//! thrown away.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cache::{remove_tree, Cache};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::Manifest;
use crate::payload::hex;
use crate::space::{Need, BLOCK};

/// A staging directory with its progress record, ready to extract into.
pub struct Staging {
    /// The cache directory, open, and the staging directory's name in it.
    pub cache_dir: File,
    pub name: String,
    pub path: PathBuf,
    record: File,
    record_path: PathBuf,
    /// Chunks an earlier start recorded as written (still to be checked).
    pub done: Vec<bool>,
    /// An earlier start had begun closing directories.
    pub closing: bool,
    /// An earlier start's staging is being continued.
    pub resumed: bool,
}

impl Staging {
    /// Continues the staging an earlier start of this payload left, or makes a fresh
    /// one. Whatever cannot be continued is removed first.
    pub fn open(cache: &Cache, manifest: &Manifest) -> Result<Staging> {
        let path = cache.staging();
        let record_path = cache.progress();
        let heading = format!("coldpack progress {}\n", hex(&cache.id));
        let earlier = read_record(&record_path, &heading, manifest.chunks.len());
        let cache_dir = cache.open_dir()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A link planted at staging's name is no staging: never follow it.
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir());
        if let (Some((done, closing)), true) = (earlier, is_dir) {
            let record = OpenOptions::new()
                .append(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&record_path)
                .map_err(|e| cache.unusable("cannot open", &record_path, e))?;
            return Ok(Staging {
                cache_dir,
                name,
                path,
                record,
                record_path,
                done,
                closing,
                resumed: true,
            });
        }
        remove_tree(&path).map_err(|e| cache.unusable("cannot remove", &path, e))?;
        remove_tree(&record_path).map_err(|e| cache.unusable("cannot remove", &record_path, e))?;
        // The record first: a staging directory without one is never continued.
        let mut record = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&record_path)
            .map_err(|e| cache.unusable("cannot create", &record_path, e))?;
        record
            .write_all(heading.as_bytes())
            .map_err(|e| cache.unusable("cannot write", &record_path, e))?;
        fs::create_dir(&path).map_err(|e| cache.unusable("cannot create", &path, e))?;
        Ok(Staging {
            cache_dir,
            name,
            path,
            record,
            record_path,
            done: vec![false; manifest.chunks.len()],
            closing: false,
            resumed: false,
        })
    }

    /// Records that chunk `index`'s files are all written.
    pub fn chunk_done(&self, index: usize) -> Result<()> {
        self.append(&format!("chunk {index}\n"))
    }

    /// Records that directories are getting their final modes.
    pub fn closing(&self) -> Result<()> {
        self.append("closing\n")
    }

    /// One line in one `write`: a start killed mid-way leaves whole lines or none.
    fn append(&self, line: &str) -> Result<()> {
        (&self.record)
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(ErrorKind::Extract, "cannot write", &self.record_path, e))
    }

    /// What staging's root and the record take already, as far as [`Need`] counts
    /// them (a block and an inode each): the space check must not ask for them twice.
    pub fn footprint(&self) -> Need {
        let taken = |path: &Path| {
            fs::symlink_metadata(path).map_or(0, |meta| (meta.blocks() * 512).min(BLOCK))
        };
        Need {
            bytes: taken(&self.path) + taken(&self.record_path),
            inodes: 2,
        }
    }

    /// Removes the progress record once the tree is published.
    pub fn finish(self) {
        let _ = fs::remove_file(&self.record_path);
    }

    /// Removes staging and its record after a failure that a retry would only repeat.
    pub fn discard(self) {
        let _ = remove_tree(&self.path);
        let _ = fs::remove_file(&self.record_path);
    }
}

/// The chunks a progress record at `path` marks as done, and whether closing began;
/// `None` when there is no usable record for this payload.
fn read_record(path: &Path, heading: &str, chunks: usize) -> Option<(Vec<bool>, bool)> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            if !file.metadata()?.is_file() {
                return Err(io::ErrorKind::InvalidData.into());
            }
            // A line per chunk and a little more: anything longer is not ours.
            file.take(64 * (chunks as u64 + 4))
                .read_to_string(&mut text)
        })
        .ok()?;
    let body = text.strip_prefix(heading)?;
    let mut done = vec![false; chunks];
    let mut closing = false;
    // Only whole lines count: the last one may have been cut short by a kill.
    for line in body.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        match line.trim_end().split_once(' ') {
            Some(("chunk", n)) => *done.get_mut(n.parse::<usize>().ok()?)? = true,
            None if line == "closing\n" => closing = true,
            _ => return None,
        }
    }
    Some((done, closing))
}
