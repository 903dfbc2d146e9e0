//! Reading the runtime directory into manifest entries.
//!
//! Nothing is followed: a symlink is recorded as a link with its target's bytes,
//! whatever it points at (relative, absolute, dangling). Entries come out in manifest
//! order (a breadth-first walk, each directory's children sorted by name; see
//! `coldpack_bootstrap::manifest`), with owners dropped, so the same tree always
//! gives the same manifest. Files that share an inode become one file, the first in
//! that order, and hardlinks to it. Setuid and setgid bits are dropped with a warning
//! (the bootstrap runs unprivileged and could not honour them); sockets, FIFOs and
//! devices cannot be carried and are refused. Entries matching an `--exclude` glob
//! are left out, a directory with its contents, and so is the output directory when
//! it lies inside the tree, so that a pack never packs its own previous output.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use coldpack_bootstrap::launch::check_path;
use coldpack_bootstrap::manifest::{Entry, EntryKind, Mtime, MODE_MASK};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Path globs as `--exclude` and `--keep-in-tmp` take them: those without `/` match a
/// name at any depth, the others the whole path from the runtime's root.
#[derive(Default)]
pub struct Globs {
    names: GlobSet,
    paths: GlobSet,
}

impl Globs {
    pub fn new(globs: &[String], option: &str) -> Result<Globs> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for glob in globs {
            // `./x` and `/x` anchor a name at the root; a trailing `/` changes nothing.
            let anchored = glob.starts_with('/') || glob.starts_with("./");
            let trimmed = glob
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            let compiled = |text: &str| -> Result<Glob> {
                GlobBuilder::new(text)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("{option} {glob:?} is not a valid glob"))
            };
            if anchored || trimmed.contains('/') {
                paths.add(compiled(trimmed)?);
            } else {
                names.add(compiled(trimmed)?);
            }
        }
        Ok(Globs {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    /// Whether the entry at `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let path = std::ffi::OsStr::from_bytes(path);
        let name = Path::new(path).file_name().unwrap_or(path);
        self.names.is_match(name) || self.paths.is_match(path)
    }

    /// Whether `path` or one of its parent directories matches.
    pub fn matches_within(&self, path: &[u8]) -> bool {
        (0..=path.len())
            .filter(|&end| end == path.len() || path[end] == b'/')
            .any(|end| self.matches(&path[..end]))
    }
}

/// The tree as walked: entries in manifest order and where each came from.
pub struct Walked {
    pub entries: Vec<Entry>,
    /// Where each entry's contents come from, index for index.
    pub sources: Vec<PathBuf>,
    /// Whether each file shares its inode with another name (a hardlink group).
    pub shared: Vec<bool>,
    pub warnings: Vec<String>,
}

/// Walks `root`, leaving out what `excludes` matches and `skip` (the output
/// directory's path inside the tree, if it is inside).
pub fn walk(root: &Path, excludes: &Globs, skip: Option<&[u8]>) -> Result<Walked> {
    let meta = fs::metadata(root)
        .with_context(|| format!("cannot read runtime directory {}", root.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: give the runtime's root directory",
            root.display()
        );
    }
    let mut walked = Walked {
        entries: Vec::new(),
        sources: Vec::new(),
        shared: Vec::new(),
        warnings: Vec::new(),
    };
    let mut inodes = Vec::new();
    let (root_entry, _) = read_entry(root, Vec::new(), 0, &meta, &mut walked.warnings)?;
    walked.entries.push(root_entry);
    walked.sources.push(root.to_owned());
    inodes.push(None);
    let mut next = 0;
    while next < walked.entries.len() {
        if walked.entries[next].kind == EntryKind::Dir {
            list(root, next, excludes, skip, &mut walked, &mut inodes)?;
        }
        next += 1;
    }
    link_shared_inodes(&mut walked, &inodes);
    Ok(walked)
}

/// Appends the children of directory entry `dir`, sorted by name.
fn list(
    root: &Path,
    dir: usize,
    excludes: &Globs,
    skip: Option<&[u8]>,
    walked: &mut Walked,
    inodes: &mut Vec<Option<(u64, u64)>>,
) -> Result<()> {
    let prefix = walked.entries[dir].path.clone();
    let source_dir = walked.sources[dir].clone();
    let listing = fs::read_dir(&source_dir)
        .with_context(|| format!("cannot list {}", source_dir.display()))?;
    let mut names = Vec::new();
    for item in listing {
        let item = item.with_context(|| format!("cannot list {}", source_dir.display()))?;
        names.push(item.file_name().into_vec());
    }
    names.sort();
    for name in names {
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if excludes.matches(&path) || skip == Some(path.as_slice()) {
            continue;
        }
        let source = root.join(std::ffi::OsStr::from_bytes(&path));
        let meta = fs::symlink_metadata(&source)
            .with_context(|| format!("cannot stat {}", source.display()))?;
        if let Err(why) = check_path(&path) {
            bail!("{} cannot be packed: its path {why}", source.display());
        }
        let (entry, inode) = read_entry(&source, path, dir as u32, &meta, &mut walked.warnings)?;
        walked.entries.push(entry);
        walked.sources.push(source);
        inodes.push(inode);
    }
    Ok(())
}

/// The first name of a shared inode (in manifest order) holds the contents; later
/// ones link to it.
fn link_shared_inodes(walked: &mut Walked, inodes: &[Option<(u64, u64)>]) {
    let mut first_name: HashMap<(u64, u64), u32> = HashMap::new();
    walked.shared = inodes.iter().map(Option::is_some).collect();
    for (index, inode) in inodes.iter().enumerate() {
        let Some(inode) = inode else { continue };
        match first_name.get(inode) {
            Some(&target) => walked.entries[index].kind = EntryKind::Hardlink { target },
            None => {
                first_name.insert(*inode, index as u32);
            }
        }
    }
}

fn read_entry(
    source: &Path,
    path: Vec<u8>,
    parent: u32,
    meta: &fs::Metadata,
    warnings: &mut Vec<String>,
) -> Result<(Entry, Option<(u64, u64)>)> {
    let kind = meta.file_type();
    let mut inode = None;
    let kind = if kind.is_dir() {
        EntryKind::Dir
    } else if kind.is_file() {
        if meta.nlink() > 1 {
            inode = Some((meta.dev(), meta.ino()));
        }
        EntryKind::File { size: meta.len() }
    } else if kind.is_symlink() {
        let target = fs::read_link(source)
            .with_context(|| format!("cannot read link {}", source.display()))?;
        EntryKind::Symlink {
            target: target.into_os_string().into_vec(),
        }
    } else {
        let what = if kind.is_socket() {
            "a socket"
        } else if kind.is_fifo() {
            "a FIFO"
        } else {
            "a device node"
        };
        bail!(
            "{} is {what}, which a Lambda deployment cannot carry: remove it from the tree",
            source.display()
        );
    };
    let mut mode = meta.mode() & 0o7777;
    if mode & !MODE_MASK != 0 {
        warnings.push(format!(
            "{}: setuid/setgid bits dropped (the bootstrap runs unprivileged)",
            source.display()
        ));
        mode &= MODE_MASK;
    }
    if matches!(kind, EntryKind::Symlink { .. }) {
        // A link's own mode means nothing on Linux; recording one keeps output stable.
        mode = 0o777;
    }
    let entry = Entry {
        path,
        parent,
        mode,
        mtime: Mtime {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec() as u32,
        },
        kind,
    };
    Ok((entry, inode))
}

/// Where `out` lies inside `dir`, if it does, as a path from `dir`'s root. `out` may
/// not exist yet: the part that does is resolved, the rest appended.
pub fn inside(dir: &Path, out: &Path) -> Option<Vec<u8>> {
    let dir = fs::canonicalize(dir).ok()?;
    let absolute = std::path::absolute(out).ok()?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(found) = fs::canonicalize(existing) {
            break found;
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    };
    let full = rest
        .iter()
        .rev()
        .fold(resolved, |path, part| path.join(part));
    let relative = full.strip_prefix(&dir).ok()?;
    Some(relative.as_os_str().as_bytes().to_vec())
}
