//! The packed tree as the loader would meet it on Lambda: entries by path, symlinks
//! followed inside the tree only, and the ELF objects among the files.

use std::collections::HashMap;

use crate::cli::Arch;
use crate::elf::{self, Object};

use super::{Kind, TreeEntry};

/// Symlinks followed while resolving one path, as the kernel allows.
const MAX_HOPS: usize = 40;

pub struct Tree<'a> {
    pub entries: &'a [TreeEntry],
    index: HashMap<&'a [u8], usize>,
    /// Per entry: the object, if the file is one for the function's machine, or why
    /// it could not be read.
    objects: Vec<Option<Result<Object, String>>>,
    /// File names and sonames of the objects: where the tree has a library.
    by_name: HashMap<Vec<u8>, Vec<usize>>,
}

impl<'a> Tree<'a> {
    /// Reads the ELF objects among `entries`; objects for another machine are left to
    /// the `--arch` lint.
    pub fn read(entries: &'a [TreeEntry], arch: Arch) -> Tree<'a> {
        let machine = arch.elf_machine();
        let objects: Vec<Option<Result<Object, String>>> = entries
            .iter()
            .map(|entry| match entry.kind {
                Kind::File if entry.elf => match elf::read(&entry.source) {
                    Ok(Some(object)) if object.machine == machine => Some(Ok(object)),
                    Ok(_) => None,
                    Err(reason) => Some(Err(reason)),
                },
                _ => None,
            })
            .collect();
        let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (index, object) in objects.iter().enumerate() {
            if let Some(Ok(object)) = object {
                let own = file_name(&entries[index].path).to_vec();
                let mut names = vec![own];
                names.extend(object.soname.clone().filter(|s| *s != names[0]));
                for name in names {
                    by_name.entry(name).or_default().push(index);
                }
            }
        }
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_slice(), i))
            .collect();
        Tree {
            entries,
            index,
            objects,
            by_name,
        }
    }

    /// Every object for the function's machine, or why a file could not be read as one.
    pub fn objects(&self) -> impl Iterator<Item = (usize, Result<&Object, &String>)> {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i, o.as_ref())))
    }

    pub fn object(&self, index: usize) -> Option<&Object> {
        self.objects.get(index)?.as_ref()?.as_ref().ok()
    }

    /// The entry at exactly this path.
    pub fn entry(&self, path: &[u8]) -> Option<usize> {
        self.index.get(path).copied()
    }

    pub fn path(&self, index: usize) -> &[u8] {
        &self.entries[index].path
    }

    /// The objects the tree has under this file name or soname, wherever they are.
    pub fn named(&self, name: &[u8]) -> &[usize] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The entry `path` leads to inside the tree, following its symlinks; `None` if
    /// nothing is there or the path leaves the tree.
    pub fn resolve(&self, path: &[u8]) -> Option<usize> {
        let mut pending: Vec<&[u8]> = path.rsplit(|&b| b == b'/').collect();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part {
                b"" | b"." => continue,
                b".." => {
                    parts.pop()?;
                    continue;
                }
                _ => parts.push(part),
            }
            let index = self.entry(&parts.join(&b'/'))?;
            match &self.entries[index].kind {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_HOPS || target.starts_with(b"/") {
                        return None;
                    }
                    parts.pop();
                    pending.extend(target.rsplit(|&b| b == b'/'));
                }
                Kind::File if pending.iter().any(|p| !p.is_empty() && *p != b".") => return None,
                _ => {}
            }
        }
        self.entry(&parts.join(&b'/'))
    }
}

pub fn file_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The directory holding `path`, `""` for the root's children.
pub fn parent(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|&b| b == b'/')
        .map_or(&[][..], |at| &path[..at])
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn entry(path: &str, kind: Kind) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            source: PathBuf::from("/nonexistent"),
            kind,
            elf: false,
        }
    }

    #[test]
    fn paths_resolve_through_links_inside_the_tree_only() {
        let link = |target: &str| Kind::Symlink(target.as_bytes().to_vec());
        let entries = vec![
            entry("", Kind::Dir),
            entry("lib", Kind::Dir),
            entry("lib/libx.so.1", Kind::File),
            entry("lib/libx.so", link("libx.so.1")),
            entry("lib64", link("lib")),
            entry("loop", link("loop")),
            entry("out", link("/usr/lib")),
            entry("up", link("../elsewhere")),
        ];
        let tree = Tree::read(&entries, Arch::X86_64);
        let found = |path: &str| tree.resolve(path.as_bytes()).map(|i| tree.path(i).to_vec());
        assert_eq!(found("lib64/libx.so"), Some(b"lib/libx.so.1".to_vec()));
        assert_eq!(found("bin/../lib/./libx.so"), None, "bin does not exist");
        assert_eq!(
            found("lib/../lib64/libx.so.1"),
            Some(b"lib/libx.so.1".to_vec())
        );
        assert_eq!(found("lib/.."), Some(b"".to_vec()));
        assert_eq!(found(".."), None);
        assert_eq!(found("loop"), None);
        assert_eq!(found("out/libc.so.6"), None);
        assert_eq!(found("up"), None);
        assert_eq!(found("lib/libx.so.1/x"), None);
    }
}
