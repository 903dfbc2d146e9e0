//! Pack-time lints: what would break or bloat the runtime on Lambda, found while the
//! user can still fix it. Most are warnings; a bootstrap or entrypoint built for
//! another machine makes the function unable to start, so those are errors unless
//! `--force`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use coldpack_bootstrap::manifest::{Entry, EntryKind};

use crate::cli::Arch;

/// `e_machine` values, from the System V ABI.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// How many paths a lint names before "and N more".
const SHOWN: usize = 5;

impl Arch {
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => EM_X86_64,
            Arch::Arm64 => EM_AARCH64,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// An ELF executable or shared library, as its header describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elf {
    pub machine: u16,
}

impl Elf {
    /// Reads the first bytes of a file: `None` unless it is an ELF executable or
    /// shared object (relocatable objects and core files are never loaded).
    pub fn parse(head: &[u8]) -> Option<Elf> {
        if head.len() < 20 || !head.starts_with(b"\x7fELF") {
            return None;
        }
        let read = |at: usize| match head[5] {
            2 => u16::from_be_bytes([head[at], head[at + 1]]),
            _ => u16::from_le_bytes([head[at], head[at + 1]]),
        };
        let kind = read(16);
        // ET_EXEC and ET_DYN (executables, PIEs and shared libraries).
        (kind == 2 || kind == 3).then(|| Elf { machine: read(18) })
    }
}

pub fn machine_name(machine: u16) -> String {
    match machine {
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "arm64 (aarch64)".into(),
        3 => "i386".into(),
        40 => "arm (32-bit)".into(),
        243 => "riscv".into(),
        other => format!("machine {other}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Errors stop the pack unless `--force`.
    pub error: bool,
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn warning(message: String) -> Lint {
    Lint {
        error: false,
        message,
    }
}

/// Paths as a short list: the first few, then a count.
pub(crate) fn listed(paths: &[String]) -> String {
    let mut shown = paths
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        shown.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    shown
}

fn text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The tree's lints. `elf` holds, entry for entry, what each file's header says;
/// `entrypoint` is the index of the file the entrypoint resolves to.
pub fn lint_tree(
    entries: &[Entry],
    elf: &[Option<Elf>],
    arch: Arch,
    entrypoint: Option<usize>,
) -> Vec<Lint> {
    let mut lints = Vec::new();
    let want = arch.elf_machine();

    let foreign: Vec<(usize, u16)> = elf
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.filter(|e| e.machine != want).map(|e| (i, e.machine)))
        .collect();
    if let Some(index) = entrypoint {
        if let Some(Elf { machine }) = elf[index].filter(|e| e.machine != want) {
            lints.push(Lint {
                error: true,
                message: format!(
                    "the entrypoint resolves to {}, built for {}, but the function is {} (--arch): it cannot start",
                    text(&entries[index].path),
                    machine_name(machine),
                    arch.as_str()
                ),
            });
        }
    }
    let mut by_machine: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (index, machine) in foreign {
        by_machine
            .entry(machine)
            .or_default()
            .push(text(&entries[index].path));
    }
    for (machine, paths) in by_machine {
        lints.push(warning(format!(
            "{} ELF files are built for {}, not {} (--arch); they will not load: {}",
            paths.len(),
            machine_name(machine),
            arch.as_str(),
            listed(&paths)
        )));
    }

    let mut absolute = Vec::new();
    let mut escaping = Vec::new();
    for entry in entries {
        if let EntryKind::Symlink { target } = &entry.kind {
            let shown = format!("{} -> {}", text(&entry.path), text(target));
            if target.starts_with(b"/") {
                absolute.push(shown);
            } else if escapes(&entry.path, target) {
                escaping.push(shown);
            }
        }
    }
    if !absolute.is_empty() {
        lints.push(warning(format!(
            "{} symlinks are absolute: on Lambda they resolve against the Lambda image, not the tree: {}",
            absolute.len(),
            listed(&absolute)
        )));
    }
    if !escaping.is_empty() {
        lints.push(warning(format!(
            "{} symlinks point outside the tree: on Lambda they resolve next to the cache directory, not to what they name here: {}",
            escaping.len(),
            listed(&escaping)
        )));
    }

    let locked: Vec<String> = entries
        .iter()
        .filter(|e| match e.kind {
            EntryKind::File { .. } => e.mode & 0o400 == 0,
            EntryKind::Dir => e.mode & 0o500 != 0o500,
            _ => false,
        })
        .map(|e| format!("{} (mode {:o})", text(&e.path), e.mode))
        .collect();
    if !locked.is_empty() {
        lints.push(warning(format!(
            "{} entries deny their owner reading: the runtime owns its extracted copy and cannot read them: {}",
            locked.len(),
            listed(&locked)
        )));
    }

    lints.extend(junk(entries));
    lints
}

/// Whether `target`, read from the directory holding `link`, climbs above the root.
fn escapes(link: &[u8], target: &[u8]) -> bool {
    let mut depth = link.iter().filter(|&&b| b == b'/').count() as isize;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// `__pycache__` directories, bytecode whose source is missing, and test directories,
/// with what they cost.
fn junk(entries: &[Entry]) -> Vec<Lint> {
    let paths: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    let mut pycache_dirs = 0;
    let mut pycache_bytes = 0;
    let mut stale = Vec::new();
    let mut stale_bytes = 0;
    let mut test_dirs: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for entry in entries {
        let parts: Vec<&[u8]> = entry.path.split(|&b| b == b'/').collect();
        let Some((name, dirs)) = parts.split_last() else {
            continue;
        };
        if entry.kind == EntryKind::Dir && *name == b"__pycache__" {
            pycache_dirs += 1;
        }
        if entry.kind == EntryKind::Dir && is_test_dir(name) {
            let nested = test_dirs
                .keys()
                .any(|d| entry.path.starts_with(d) && entry.path.get(d.len()) == Some(&b'/'));
            if !nested {
                test_dirs.insert(entry.path.clone(), 0);
            }
        }
        let size = entry.file_size();
        if size == 0 {
            continue;
        }
        if let Some(at) = dirs.iter().position(|d| *d == b"__pycache__") {
            pycache_bytes += size;
            if at == dirs.len() - 1 && name.ends_with(b".pyc") {
                let module = name.split(|&b| b == b'.').next().unwrap_or(name);
                let mut source = dirs[..at].join(&b'/');
                if !source.is_empty() {
                    source.push(b'/');
                }
                source.extend_from_slice(module);
                source.extend_from_slice(b".py");
                if !paths.contains(source.as_slice()) {
                    stale.push(text(&entry.path));
                    stale_bytes += size;
                }
            }
        } else if name.ends_with(b".pyc") {
            let source = [&entry.path[..entry.path.len() - 1]].concat();
            if !paths.contains(source.as_slice()) {
                stale.push(text(&entry.path));
                stale_bytes += size;
            }
        }
        for (dir, bytes) in test_dirs.iter_mut() {
            if entry.path.starts_with(dir) && entry.path.get(dir.len()) == Some(&b'/') {
                *bytes += size;
            }
        }
    }
    let mut lints = Vec::new();
    if pycache_dirs > 0 {
        lints.push(warning(format!(
            "{pycache_dirs} __pycache__ directories cost {}: to leave them out, --exclude __pycache__ (Python then compiles what it imports at the first start) and set --env PYTHONPYCACHEPREFIX=/tmp/pycache, so that Python does not write into the copy the bootstrap checks",
            megabytes(pycache_bytes)
        )));
    }
    if !stale.is_empty() {
        lints.push(warning(format!(
            "{} .pyc files ({}) have no .py source next to them: stale bytecode, or a sourceless install on purpose: {}",
            stale.len(),
            megabytes(stale_bytes),
            listed(&stale)
        )));
    }
    if !test_dirs.is_empty() {
        let total: u64 = test_dirs.values().sum();
        let named: Vec<String> = test_dirs
            .iter()
            .map(|(dir, bytes)| format!("{} ({})", text(dir), megabytes(*bytes)))
            .collect();
        lints.push(warning(format!(
            "{} test directories cost {}: --exclude them if the runtime does not need them: {}",
            test_dirs.len(),
            megabytes(total),
            listed(&named)
        )));
    }
    lints
}

fn is_test_dir(name: &[u8]) -> bool {
    matches!(name, b"test" | b"tests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_links_are_told_from_inner_ones() {
        assert!(!escapes(b"bin/python", b"python3.11"));
        assert!(!escapes(b"bin/python", b"../lib/x"));
        assert!(escapes(b"bin/python", b"../../x"));
        assert!(escapes(b"top", b"../x"));
        assert!(!escapes(b"a/b/c", b"../../d/./e"));
    }

    #[test]
    fn elf_header_names_its_machine() {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[5] = 1;
        head[16] = 3;
        head[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(
            Elf::parse(&head),
            Some(Elf {
                machine: EM_AARCH64
            })
        );
        head[16] = 1; // a relocatable object is never loaded
        assert_eq!(Elf::parse(&head), None);
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), None);
    }
}
