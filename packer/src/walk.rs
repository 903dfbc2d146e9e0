//! Reading the runtime directory into manifest entries.
//!
//! Nothing is followed: a symlink is recorded as a link with its target's bytes,
//! whatever it points at (relative, absolute, dangling). Files that share an inode
//! become one file and hardlinks to it. Entries come out sorted by path bytes, with
//! owners dropped, so the same tree always gives the same manifest. Setuid and setgid
//! bits are dropped with a warning (the bootstrap runs unprivileged and could not
//! honour them); sockets, FIFOs and devices cannot be carried and are refused.
//! Entries matching an `--exclude` glob are left out, a directory with its contents.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use coldpack_bootstrap::manifest::{check_path, Entry, EntryKind, Mtime, MODE_MASK};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The `--exclude` globs: those without `/` match a name at any depth, the others
/// the whole path from the runtime's root.
#[derive(Default)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(globs: &[String]) -> Result<Excludes> {
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
                    .with_context(|| format!("--exclude {glob:?} is not a valid glob"))
            };
            if anchored || trimmed.contains('/') {
                paths.add(compiled(trimmed)?);
            } else {
                names.add(compiled(trimmed)?);
            }
        }
        Ok(Excludes {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    /// Whether the entry at `path` (relative, `/`-separated) is left out.
    pub fn excludes(&self, path: &[u8]) -> bool {
        let path = std::ffi::OsStr::from_bytes(path);
        let name = Path::new(path).file_name().unwrap_or(path);
        self.names.is_match(name) || self.paths.is_match(path)
    }

    /// Whether `path` or one of its parent directories is left out.
    pub fn excludes_within(&self, path: &[u8]) -> bool {
        (0..=path.len())
            .filter(|&end| end == path.len() || path[end] == b'/')
            .any(|end| self.excludes(&path[..end]))
    }
}

/// An entry and the file it was read from.
pub struct Walked {
    pub entries: Vec<Entry>,
    /// Where each entry's contents come from, index for index.
    pub sources: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

pub fn walk(root: &Path, excludes: &Excludes) -> Result<Walked> {
    let meta = fs::metadata(root)
        .with_context(|| format!("cannot read runtime directory {}", root.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: give the runtime's root directory",
            root.display()
        );
    }
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    found.push(read_entry(root, Vec::new(), &meta, &mut warnings)?);
    collect(root, &[], excludes, &mut found, &mut warnings)?;
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));

    // The first name of an inode (in sorted order) holds the contents; later ones link to it.
    let mut first_name: HashMap<(u64, u64), u32> = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    let mut sources = Vec::with_capacity(found.len());
    for (index, (mut entry, source, inode)) in found.into_iter().enumerate() {
        if let (EntryKind::File { .. }, Some(inode)) = (&entry.kind, inode) {
            match first_name.get(&inode) {
                Some(&target) => entry.kind = EntryKind::Hardlink { target },
                None => {
                    first_name.insert(inode, index as u32);
                }
            }
        }
        entries.push(entry);
        sources.push(source);
    }
    Ok(Walked {
        entries,
        sources,
        warnings,
    })
}

type Found = (Entry, PathBuf, Option<(u64, u64)>);

fn collect(
    root: &Path,
    prefix: &[u8],
    excludes: &Excludes,
    found: &mut Vec<Found>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let dir = root.join(std::ffi::OsStr::from_bytes(prefix));
    let listing = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for item in listing {
        let item = item.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = item.file_name();
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        if excludes.excludes(&path) {
            continue;
        }
        let source = item.path();
        let meta = fs::symlink_metadata(&source)
            .with_context(|| format!("cannot stat {}", source.display()))?;
        if let Err(why) = check_path(&path) {
            bail!("{} cannot be packed: its path {why}", source.display());
        }
        let found_entry = read_entry(&source, path, &meta, warnings)?;
        let is_dir = found_entry.0.kind == EntryKind::Dir;
        let path = found_entry.0.path.clone();
        found.push(found_entry);
        if is_dir {
            collect(root, &path, excludes, found, warnings)?;
        }
    }
    Ok(())
}

fn read_entry(
    source: &Path,
    path: Vec<u8>,
    meta: &fs::Metadata,
    warnings: &mut Vec<String>,
) -> Result<Found> {
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
        mode,
        mtime: Mtime {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec() as u32,
        },
        kind,
    };
    Ok((entry, source.to_owned(), inode))
}
