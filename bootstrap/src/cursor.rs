//! The directories on one thread's current path, each opened relative to the one
//! before it, so that every entry is reached by one name in one open directory.
//!
//! Manifest order visits directory after directory, and consecutive directories share
//! most of their path, so a thread that keeps its path open opens each directory about
//! once. Extraction makes a directory the first time a thread needs it (see [`Made`]);
//! the warm check only opens. No link is ever followed below the cache directory.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use crate::manifest::Manifest;
use crate::sys;

/// Which directories of a tree being extracted exist, shared by its threads. A fresh
/// staging directory has none, so a directory is made before it is opened (no failed
/// lookup first); a resumed one may have any, so it is opened first. A directory is
/// made with its final mode when that lets its owner write and search it (so closing
/// it needs no `chmod`), owner-only otherwise, so that nothing blocks its children
/// until the tree is finished.
pub struct Made {
    made: Vec<AtomicBool>,
    fresh: bool,
}

impl Made {
    pub fn new(manifest: &Manifest, fresh: bool) -> Made {
        let made = (0..manifest.len())
            .map(|i| AtomicBool::new(i == 0))
            .collect();
        Made { made, fresh }
    }

    pub fn contains(&self, dir: usize) -> bool {
        self.made[dir].load(Ordering::Relaxed)
    }

    /// The mode a directory is made with.
    pub fn mode(manifest: &Manifest, dir: usize) -> u32 {
        let mode = manifest.mode(dir);
        if mode & 0o700 == 0o700 {
            mode
        } else {
            0o700
        }
    }
}

pub struct Cursor<'a> {
    manifest: &'a Manifest,
    /// The cache directory, and the tree's name in it (the staging name while the
    /// tree is extracted).
    base: &'a File,
    root_name: &'a [u8],
    /// Where directories that are not there yet are made; `None` only opens.
    made: Option<&'a Made>,
    open: Vec<(usize, File)>,
    chain: Vec<usize>,
}

impl<'a> Cursor<'a> {
    pub fn new(
        manifest: &'a Manifest,
        base: &'a File,
        root_name: &'a [u8],
        made: Option<&'a Made>,
    ) -> Self {
        Cursor {
            manifest,
            base,
            root_name,
            made,
            open: Vec::new(),
            chain: Vec::new(),
        }
    }

    /// The cache directory the tree is in.
    pub fn base(&self) -> &'a File {
        self.base
    }

    /// Directory entry `dir`, open.
    pub fn dir(&mut self, dir: usize) -> io::Result<&File> {
        if self.open.last().is_some_and(|(open, _)| *open == dir) {
            return Ok(&self.open[self.open.len() - 1].1);
        }
        self.chain.clear();
        self.chain.push(dir);
        while let Some(&last) = self.chain.last().filter(|&&d| d != 0) {
            self.chain.push(self.manifest.parent(last));
        }
        self.chain.reverse();
        let kept = self
            .open
            .iter()
            .zip(&self.chain)
            .take_while(|((open, _), want)| open == *want)
            .count();
        self.open.truncate(kept);
        for at in kept..self.chain.len() {
            let want = self.chain[at];
            let opened = match self.open.last() {
                Some((_, parent)) => self.open_child(parent, want)?,
                None => sys::open_dir(self.base, self.root_name)?,
            };
            self.open.push((want, opened));
        }
        Ok(&self.open[self.open.len() - 1].1)
    }

    fn open_child(&self, parent: &File, dir: usize) -> io::Result<File> {
        let name = self.manifest.name(dir);
        let Some(made) = self.made.filter(|made| !made.contains(dir)) else {
            return sys::open_dir(parent, name);
        };
        let exists = |e: &io::Error| e.raw_os_error() == Some(Errno::EEXIST as i32);
        let opened = if made.fresh {
            match sys::make_dir(parent, name, Made::mode(self.manifest, dir)) {
                Err(e) if !exists(&e) => return Err(e),
                _ => sys::open_dir(parent, name)?,
            }
        } else {
            match sys::open_dir(parent, name) {
                Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {
                    match sys::make_dir(parent, name, Made::mode(self.manifest, dir)) {
                        Err(e) if !exists(&e) => return Err(e),
                        _ => sys::open_dir(parent, name)?,
                    }
                }
                other => other?,
            }
        };
        made.made[dir].store(true, Ordering::Relaxed);
        Ok(opened)
    }
}
