//! What a file's first kilobyte says about it: whether it is an ELF object and for
//! which machine, whether it is a program (an ELF executable or a `#!` script, which
//! find their own real path when they start), and how a `.pyc` is checked against its
//! source. Read once for every file, on every core, before anything is written; this
//! is also where unreadable files are found, all of them at once.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use coldpack_bootstrap::manifest::{Entry, EntryKind};

use crate::lint::Elf;
use crate::parallel_map;

/// Bytes read from the start of each file.
const HEAD: u64 = 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub elf: Option<Elf>,
    /// An ELF executable (with an interpreter, or `ET_EXEC`) or a `#!` script.
    pub program: bool,
    /// A `.pyc` that Python checks against its source's mtime (PEP 552 flags 0).
    pub pyc_timestamp: bool,
}

impl Head {
    pub fn parse(name: &[u8], head: &[u8]) -> Head {
        let elf = Elf::parse(head);
        Head {
            elf,
            program: head.starts_with(b"#!") || (elf.is_some() && elf_program(head)),
            pyc_timestamp: name.ends_with(b".pyc")
                && head.len() >= 16
                && head[2..4] == [b'\r', b'\n']
                && head[4..8] == [0, 0, 0, 0],
        }
    }
}

/// Whether an ELF object is started as a program: `ET_EXEC`, or a `PT_INTERP` among
/// the program headers within `head` (a PIE; a shared library has none).
fn elf_program(head: &[u8]) -> bool {
    if head.len() < 64 || head[4] != 2 || head[5] != 1 {
        return false; // only 64-bit little-endian objects run on Lambda
    }
    let u16_at = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if u16_at(16) == 2 {
        return true;
    }
    let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap_or([0; 8]));
    let (size, count) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    (0..count).any(|i| {
        let at = (phoff as usize).saturating_add(i * size);
        at.checked_add(4).is_some_and(|end| end <= head.len()) && u32_at(at) == 3
    })
}

/// Every entry's head (the default for anything but a regular file).
pub fn read_heads(entries: &[Entry], sources: &[PathBuf]) -> Result<Vec<Head>> {
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i].kind, EntryKind::File { .. }))
        .collect();
    let heads = parallel_map(files.len(), |job| {
        let index = files[job];
        let source = &sources[index];
        let read = || -> std::io::Result<Head> {
            let mut head = Vec::with_capacity(HEAD as usize);
            File::open(source)?.take(HEAD).read_to_end(&mut head)?;
            Ok(Head::parse(entries[index].name(), &head))
        };
        Ok(read().map_err(|e| format!("{} ({e})", source.display())))
    })?;
    let unreadable: Vec<&String> = heads.iter().filter_map(|h| h.as_ref().err()).collect();
    if !unreadable.is_empty() {
        let shown: Vec<&str> = unreadable.iter().take(10).map(|s| s.as_str()).collect();
        bail!(
            "cannot read {} files, so they cannot be packed: {}{}; make them readable or --exclude them",
            unreadable.len(),
            shown.join(", "),
            if unreadable.len() > 10 { ", ..." } else { "" }
        );
    }
    let mut all = vec![Head::default(); entries.len()];
    for (&index, head) in files.iter().zip(heads) {
        all[index] = head.map_err(|e| anyhow!(e))?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_libraries_scripts_and_pycs_are_told_apart() {
        let this = std::fs::read("/proc/self/exe").unwrap();
        assert!(Head::parse(b"test", &this[..1024]).program);
        let mut library = this[..1024].to_vec();
        library[16] = 3; // ET_DYN
        let phoff = u64::from_le_bytes(library[32..40].try_into().unwrap()) as usize;
        let count = u16::from_le_bytes([library[56], library[57]]) as usize;
        for i in 0..count {
            let at = phoff + i * 56;
            if at + 4 <= library.len() && library[at..at + 4] == 3u32.to_le_bytes() {
                library[at] = 1; // PT_INTERP made PT_LOAD
            }
        }
        assert!(!Head::parse(b"lib.so", &library).program);
        assert!(Head::parse(b"run", b"#!/bin/sh\n").program);
        let pyc = [&[0xa7, 0x0d, b'\r', b'\n'][..], &[0; 12]].concat();
        assert!(Head::parse(b"x.cpython-311.pyc", &pyc).pyc_timestamp);
        let hashed = [&[0xa7, 0x0d, b'\r', b'\n'][..], &[1, 0, 0, 0], &[0; 8]].concat();
        assert!(!Head::parse(b"x.cpython-311.pyc", &hashed).pyc_timestamp);
    }
}
