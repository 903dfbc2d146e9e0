//! Pack-time lints: what would break or bloat the runtime on Lambda, found while the
//! user can still fix it. Most are warnings; a bootstrap or entrypoint built for
//! another machine makes the function unable to start, so those are errors unless
//! `--force`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use coldpack_bootstrap::manifest::{Entry, EntryKind};

use crate::budget::{counted, mebibytes};
use crate::cli::Arch;
use crate::resolve;

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

pub fn warning(message: String) -> Lint {
    Lint {
        error: false,
        message,
    }
}

/// Paths as a short list: the first few, then a count.
pub fn listed(paths: &[String]) -> String {
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

pub fn text(path: &[u8]) -> String {
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
    let mut lints = machines(entries, elf, arch, entrypoint);
    lints.extend(symlinks(entries));
    lints.extend(junk(entries));
    lints.extend(build_only(entries));
    lints
}

/// ELF files built for another machine than `arch`: an error for the entrypoint, a
/// warning per machine for the rest.
fn machines(
    entries: &[Entry],
    elf: &[Option<Elf>],
    arch: Arch,
    entrypoint: Option<usize>,
) -> Vec<Lint> {
    let mut lints = Vec::new();
    let want = arch.elf_machine();
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
    for (index, e) in elf.iter().enumerate() {
        if let Some(Elf { machine }) = e.filter(|e| e.machine != want) {
            by_machine
                .entry(machine)
                .or_default()
                .push(text(&entries[index].path));
        }
    }
    for (machine, paths) in by_machine {
        lints.push(warning(format!(
            "{} built for {}, not {} (--arch); they will not load: {}",
            counted(paths.len(), "ELF file is", "ELF files are"),
            machine_name(machine),
            arch.as_str(),
            listed(&paths)
        )));
    }
    lints
}

/// Symlinks that are absolute or climb out of the tree: on Lambda they resolve
/// somewhere else than here.
fn symlinks(entries: &[Entry]) -> Vec<Lint> {
    let mut lints = Vec::new();
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
            "{} absolute: on Lambda they resolve against the Lambda image, not the tree: {}",
            counted(absolute.len(), "symlink is", "symlinks are"),
            listed(&absolute)
        )));
    }
    if !escaping.is_empty() {
        lints.push(warning(format!(
            "{} outside the tree: on Lambda they resolve next to the cache directory, not to what they name here: {}",
            counted(escaping.len(), "symlink points", "symlinks point"),
            listed(&escaping)
        )));
    }
    lints
}

/// Whether `target`, read from the directory holding `link`, climbs above the root.
fn escapes(link: &[u8], target: &[u8]) -> bool {
    let depth = link.iter().filter(|&&b| b == b'/').count();
    resolve::climbs_out(depth, target)
}

/// `__pycache__` directories, bytecode whose source is missing, and test directories,
/// with what they cost.
fn junk(entries: &[Entry]) -> Vec<Lint> {
    Junk::tally(entries).lints()
}

/// What [`junk`] finds, tallied in one pass over the tree.
#[derive(Default)]
struct Junk {
    pycache_dirs: usize,
    pycache_bytes: u64,
    stale: Vec<String>,
    stale_bytes: u64,
    /// Outermost test directories, with the bytes of files under them.
    test_dirs: BTreeMap<Vec<u8>, u64>,
}

impl Junk {
    fn tally(entries: &[Entry]) -> Junk {
        let paths: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        let under =
            |dir: &[u8], path: &[u8]| path.starts_with(dir) && path.get(dir.len()) == Some(&b'/');
        let mut junk = Junk::default();
        for entry in entries {
            let parts: Vec<&[u8]> = entry.path.split(|&b| b == b'/').collect();
            let Some((name, dirs)) = parts.split_last() else {
                continue;
            };
            if entry.kind == EntryKind::Dir && *name == b"__pycache__" {
                junk.pycache_dirs += 1;
            }
            if entry.kind == EntryKind::Dir
                && is_test_dir(name)
                && !junk.test_dirs.keys().any(|d| under(d, &entry.path))
            {
                junk.test_dirs.insert(entry.path.clone(), 0);
            }
            let size = entry.file_size();
            if size == 0 {
                continue;
            }
            if dirs.contains(&&b"__pycache__"[..]) {
                junk.pycache_bytes += size;
            }
            if pyc_source(&entry.path, dirs, name)
                .is_some_and(|source| !paths.contains(source.as_slice()))
            {
                junk.stale.push(text(&entry.path));
                junk.stale_bytes += size;
            }
            for (dir, bytes) in junk.test_dirs.iter_mut() {
                if under(dir, &entry.path) {
                    *bytes += size;
                }
            }
        }
        junk
    }

    fn lints(self) -> Vec<Lint> {
        let mut lints = Vec::new();
        if self.pycache_dirs > 0 {
            lints.push(warning(format!(
                "{} {}: to leave them out, --exclude __pycache__ (Python then compiles what it imports at the first start) and set --env PYTHONPYCACHEPREFIX=/tmp/pycache, so that Python does not write into the copy the bootstrap checks",
                counted(self.pycache_dirs, "__pycache__ directory costs", "__pycache__ directories cost"),
                mebibytes(self.pycache_bytes)
            )));
        }
        if !self.stale.is_empty() {
            lints.push(warning(format!(
                "{} ({}) with no .py source beside: stale bytecode, or a sourceless install on purpose: {}",
                counted(self.stale.len(), ".pyc file", ".pyc files"),
                mebibytes(self.stale_bytes),
                listed(&self.stale)
            )));
        }
        if !self.test_dirs.is_empty() {
            let total: u64 = self.test_dirs.values().sum();
            let named: Vec<String> = self
                .test_dirs
                .iter()
                .map(|(dir, bytes)| format!("{} ({})", text(dir), mebibytes(*bytes)))
                .collect();
            lints.push(warning(format!(
                "{} {}: --exclude them if the runtime does not need them: {}",
                counted(
                    self.test_dirs.len(),
                    "test directory costs",
                    "test directories cost"
                ),
                mebibytes(total),
                listed(&named)
            )));
        }
        lints
    }
}

/// The source a `.pyc` at `path` (`dirs` then `name`) was compiled from: `m.py` for
/// `__pycache__/m.cpython-311.pyc` beside it, `m.py` for a sourceless `m.pyc`; `None`
/// for anything else (a file deeper inside a `__pycache__` included).
fn pyc_source(path: &[u8], dirs: &[&[u8]], name: &[u8]) -> Option<Vec<u8>> {
    if !name.ends_with(b".pyc") {
        return None;
    }
    match dirs.iter().position(|d| *d == b"__pycache__") {
        Some(at) if at == dirs.len() - 1 => {
            let module = name.split(|&b| b == b'.').next().unwrap_or(name);
            let mut source = dirs[..at].join(&b'/');
            if !source.is_empty() {
                source.push(b'/');
            }
            source.extend_from_slice(module);
            source.extend_from_slice(b".py");
            Some(source)
        }
        Some(_) => None,
        None => Some(path[..path.len() - 1].to_vec()),
    }
}

/// What only a build uses, with what it costs: static libraries and object files at
/// any depth (CPython's 45 MB `lib/python3.11/config-3.11-*/libpython3.11.a`), and C
/// headers in a top-level `include/`. The suggested globs are the ones that match them.
fn build_only(entries: &[Entry]) -> Vec<Lint> {
    let mut archives: Vec<(u64, &[u8])> = Vec::new();
    let mut suffixes: Vec<&str> = Vec::new();
    let mut headers: Option<u64> = None;
    for entry in entries {
        let name = entry.name();
        if let EntryKind::File { size } = entry.kind {
            for (ending, suffix) in [(&b".a"[..], "a"), (b".o", "o")] {
                if name.len() > 2 && name.ends_with(ending) {
                    archives.push((size, &entry.path));
                    if !suffixes.contains(&suffix) {
                        suffixes.push(suffix);
                    }
                }
            }
        }
        if entry.path == b"include" && entry.kind == EntryKind::Dir {
            headers = Some(0);
        } else if let (Some(bytes), true) = (headers.as_mut(), entry.path.starts_with(b"include/"))
        {
            *bytes += entry.file_size();
        }
    }
    let mut lints = Vec::new();
    if !archives.is_empty() {
        archives.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let total: u64 = archives.iter().map(|(size, _)| size).sum();
        let named: Vec<String> = archives
            .iter()
            .map(|(size, path)| format!("{} ({})", text(path), mebibytes(*size)))
            .collect();
        suffixes.sort_unstable();
        let globs: Vec<String> = suffixes
            .iter()
            .map(|s| format!("--exclude '*.{s}'"))
            .collect();
        lints.push(warning(format!(
            "{} {}, which only a build links: {}: {}",
            counted(
                archives.len(),
                "static library or object file costs",
                "static libraries and object files cost"
            ),
            mebibytes(total),
            globs.join(" "),
            listed(&named)
        )));
    }
    if let Some(bytes) = headers.filter(|&b| b > 0) {
        lints.push(warning(format!(
            "include/ holds {} of C headers, which only a build reads: --exclude /include",
            mebibytes(bytes)
        )));
    }
    lints
}

fn is_test_dir(name: &[u8]) -> bool {
    matches!(name, b"test" | b"tests")
}

/// Timestamp-checked `.pyc` files kept in the deployment. Python compares such a file
/// with its source's mtime to the second, and nothing says Lambda keeps a zip's mtimes
/// that precisely (a zip's own times have a 2-second grain): where they differ, Python
/// recompiles the module in memory at every import and cannot save the result in the
/// read-only deployment (imports measured 7 times slower here).
pub fn timestamp_pycs(
    entries: &[Entry],
    heads: &[crate::head::Head],
    kept: &[bool],
) -> Option<Lint> {
    let found: Vec<String> = entries
        .iter()
        .zip(heads)
        .zip(kept)
        .filter(|((_, head), &kept)| kept && head.pyc_timestamp)
        .map(|((entry, _), _)| text(&entry.path))
        .collect();
    (!found.is_empty()).then(|| {
        warning(format!(
            "{} .pyc files kept in the deployment are checked against their sources' mtimes, which Lambda does not keep to the second: Python would recompile them at every cold start; compile with `python -m compileall --invalidation-mode unchecked-hash` before packing: {}",
            found.len(),
            listed(&found)
        ))
    })
}

/// Entries their owner cannot read (files) or search (directories): the runtime owns
/// its extracted copy and could not use them, nor could the bootstrap check or remove
/// them, so the pack refuses them whatever `--force` says.
pub fn owner_locked(entries: &[Entry]) -> Option<String> {
    let locked: Vec<String> = entries
        .iter()
        .filter(|e| match e.kind {
            EntryKind::File { .. } => e.mode & 0o400 == 0,
            EntryKind::Dir => e.mode & 0o500 != 0o500,
            _ => false,
        })
        .map(|e| format!("{} (mode {:o})", text(&e.path), e.mode))
        .collect();
    (!locked.is_empty()).then(|| {
        format!(
            "{} reading or searching: the runtime could not use them nor the bootstrap check them: {}; chmod u+r files and u+rx directories",
            counted(locked.len(), "entry denies its owner", "entries deny their owner"),
            listed(&locked)
        )
    })
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
