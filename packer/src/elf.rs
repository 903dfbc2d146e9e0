//! What the dynamic loader reads from an ELF object before any of its code runs: the
//! loader it asks for (`PT_INTERP`), the libraries it needs (`DT_NEEDED`), where it
//! looks for them (`DT_RPATH`, `DT_RUNPATH`), its own name (`DT_SONAME`) and the
//! symbol versions it needs from each library (`DT_VERNEED`: `GLIBC_2.35` from
//! `libc.so.6`). [`crate::compat`] checks these against a Lambda image.
//!
//! A small reader rather than a crate: it reads only the program headers, the dynamic
//! section and the strings and version records that section points at, with
//! positioned reads, so a 200 MB Chromium costs a few kilobytes of I/O. Only 64-bit
//! little-endian objects are read, which is all Lambda runs (x86_64 and aarch64);
//! anything else is "not a loadable object" here and left to the `--arch` lint. Every
//! offset and count comes from the file and is checked before use: a malformed object
//! gives an error naming what is wrong, never a panic.
//!
//! Layouts: the System V gABI (<https://refspecs.linuxfoundation.org/elf/gabi4+/ch5.dynamic.html>)
//! and the LSB's symbol versioning (<https://refspecs.linuxfoundation.org/LSB_5.0.0/LSB-Core-generic/LSB-Core-generic/symversion.html>).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_SONAME: i64 = 14;
const DT_RPATH: i64 = 15;
const DT_RUNPATH: i64 = 29;
const DT_VERNEED: i64 = 0x6fff_fffe;
const DT_VERNEEDNUM: i64 = 0x6fff_ffff;
const HEADER_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const DYN_LEN: usize = 16;
const VERNEED_LEN: usize = 16;
/// Caps on what a file may make this reader read: far above any real object.
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_STRINGS: u64 = 16 << 20;
const MAX_VERSION_RECORDS: usize = 1 << 16;

/// A loadable ELF object (executable, PIE or shared library), as the loader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    /// `e_machine`: 62 for x86_64, 183 for aarch64.
    pub machine: u16,
    /// The dynamic loader an executable asks for; `None` for libraries and static
    /// executables.
    pub interpreter: Option<Vec<u8>>,
    pub needed: Vec<Vec<u8>>,
    pub soname: Option<Vec<u8>>,
    /// Directories of `DT_RPATH`, in order.
    pub rpath: Vec<Vec<u8>>,
    /// Directories of `DT_RUNPATH`, in order.
    pub runpath: Vec<Vec<u8>>,
    /// Per library, the symbol versions the object needs from it.
    pub version_needs: Vec<VersionNeed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionNeed {
    /// The library's name as in `DT_NEEDED` (`libc.so.6`).
    pub library: Vec<u8>,
    /// Version names (`GLIBC_2.35`).
    pub versions: Vec<Vec<u8>>,
}

/// Bytes at an offset: a file read with `pread`, or a slice in tests.
pub trait Source {
    /// Up to `len` bytes at `offset`; fewer only at the end of the data.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

impl Source for File {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0; len];
        let mut filled = 0;
        while filled < len {
            match FileExt::read_at(self, &mut buffer[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buffer.truncate(filled);
        Ok(buffer)
    }
}

impl Source for [u8] {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Ok(self[start..end].to_vec())
    }
}

/// Reads the file at `path`: `Ok(None)` when it is not a 64-bit little-endian
/// executable or shared library.
pub fn read(path: &Path) -> Result<Option<Object>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    parse(&file)
}

/// Reads an object from `source`: `Ok(None)` when it is not a 64-bit little-endian
/// executable or shared library, `Err` when it claims to be one but is malformed.
pub fn parse<S: Source + ?Sized>(source: &S) -> Result<Option<Object>, String> {
    let head = read_exact(source, 0, HEADER_LEN).ok();
    let Some(head) = head.filter(|h| h.starts_with(b"\x7fELF") && h[4] == 2 && h[5] == 1) else {
        return Ok(None);
    };
    let kind = u16_at(&head, 16);
    // ET_EXEC and ET_DYN; relocatable objects and core files are never loaded.
    if kind != Some(2) && kind != Some(3) {
        return Ok(None);
    }
    let field = |value: Option<u64>, what: &str| value.ok_or_else(|| format!("no {what}"));
    let machine = field(u16_at(&head, 18).map(u64::from), "machine")? as u16;
    let phoff = field(u64_at(&head, 32), "program header offset")?;
    let phentsize = field(u16_at(&head, 54).map(u64::from), "program header size")?;
    let phnum = field(u16_at(&head, 56).map(u64::from), "program header count")?;
    let mut object = Object {
        machine,
        ..Object::default()
    };
    if phnum == 0 {
        return Ok(Some(object));
    }
    if phentsize != PHDR_LEN as u64 || phnum == 0xffff {
        return Err(format!(
            "unexpected program headers ({phnum} of {phentsize} bytes)"
        ));
    }
    let table = read_exact(source, phoff, phnum as usize * PHDR_LEN)
        .map_err(|_| "truncated program headers".to_string())?;
    let segments: Vec<Segment> = table
        .chunks_exact(PHDR_LEN)
        .filter_map(Segment::parse)
        .collect();
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let bytes = read_exact(source, interp.offset, interp.file_len.min(4096) as usize)
            .map_err(|_| "truncated interpreter path".to_string())?;
        object.interpreter = Some(until_nul(&bytes).to_vec());
    }
    if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
        read_dynamic(source, dynamic, &segments, &mut object)?;
    }
    Ok(Some(object))
}

/// A program header: what the loader maps, and where it is in the file.
struct Segment {
    kind: u32,
    offset: u64,
    address: u64,
    file_len: u64,
}

impl Segment {
    fn parse(bytes: &[u8]) -> Option<Segment> {
        Some(Segment {
            kind: u32_at(bytes, 0)?,
            offset: u64_at(bytes, 8)?,
            address: u64_at(bytes, 16)?,
            file_len: u64_at(bytes, 32)?,
        })
    }
}

/// The file offset of a virtual address, and how many bytes of its segment follow it:
/// the dynamic section names its tables by address.
fn file_offset(segments: &[Segment], address: u64) -> Option<(u64, u64)> {
    segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find_map(|s| {
            let into = address.checked_sub(s.address)?;
            (into < s.file_len).then(|| (s.offset.checked_add(into), s.file_len - into))
        })
        .and_then(|(offset, left)| Some((offset?, left)))
}

/// The dynamic section's entries and the strings and version records they name.
fn read_dynamic<S: Source + ?Sized>(
    source: &S,
    dynamic: &Segment,
    segments: &[Segment],
    object: &mut Object,
) -> Result<(), String> {
    let bytes = source
        .read_at(dynamic.offset, dynamic.file_len.min(MAX_DYNAMIC) as usize)
        .map_err(|e| format!("cannot read the dynamic section: {e}"))?;
    let mut tags: Vec<(i64, u64)> = Vec::new();
    for entry in bytes.chunks_exact(DYN_LEN) {
        let (Some(tag), Some(value)) = (u64_at(entry, 0), u64_at(entry, 8)) else {
            break;
        };
        if tag as i64 == DT_NULL {
            break;
        }
        tags.push((tag as i64, value));
    }
    let value = |wanted: i64| tags.iter().find(|(t, _)| *t == wanted).map(|&(_, v)| v);
    let names: Vec<&(i64, u64)> = tags
        .iter()
        .filter(|(t, _)| matches!(*t, DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH))
        .collect();
    let verneed = value(DT_VERNEED).zip(value(DT_VERNEEDNUM));
    if names.is_empty() && verneed.is_none() {
        return Ok(());
    }
    let strings = match value(DT_STRTAB).and_then(|a| file_offset(segments, a)) {
        Some((offset, left)) => {
            let len = value(DT_STRSZ).unwrap_or(left).min(left).min(MAX_STRINGS);
            read_exact(source, offset, len as usize)
                .map_err(|_| "truncated string table".to_string())?
        }
        None => return Err("its string table is not in a loaded segment".into()),
    };
    let string = |offset: u64| -> Result<Vec<u8>, String> {
        usize::try_from(offset)
            .ok()
            .and_then(|at| strings.get(at..))
            .filter(|rest| rest.contains(&0))
            .map(|rest| until_nul(rest).to_vec())
            .ok_or_else(|| format!("a name at {offset} is outside its string table"))
    };
    for &&(tag, offset) in &names {
        let text = string(offset)?;
        match tag {
            DT_NEEDED => object.needed.push(text),
            DT_SONAME => object.soname = Some(text),
            DT_RPATH => object.rpath = split_path(&text),
            _ => object.runpath = split_path(&text),
        }
    }
    if let Some((address, count)) = verneed {
        object.version_needs = read_version_needs(source, segments, address, count, &string)?;
    }
    Ok(())
}

/// The `Elf64_Verneed` records (one per library) and their `Elf64_Vernaux` entries
/// (one per version), chained by relative offsets.
fn read_version_needs<S: Source + ?Sized>(
    source: &S,
    segments: &[Segment],
    address: u64,
    count: u64,
    string: &dyn Fn(u64) -> Result<Vec<u8>, String>,
) -> Result<Vec<VersionNeed>, String> {
    let (offset, left) =
        file_offset(segments, address).ok_or("its version records are not in a loaded segment")?;
    let records = source
        .read_at(offset, left.min(MAX_DYNAMIC) as usize)
        .map_err(|e| format!("cannot read version records: {e}"))?;
    let record = |at: usize| records.get(at..at.checked_add(VERNEED_LEN)?);
    let broken = || "a version record runs past its segment".to_string();
    let mut needs = Vec::new();
    let mut at = 0usize;
    let mut seen = 0usize;
    for _ in 0..count.min(MAX_VERSION_RECORDS as u64) {
        let need = record(at).ok_or_else(broken)?;
        let versions_count = u16_at(need, 2).ok_or_else(broken)?;
        let file = u32_at(need, 4).ok_or_else(broken)?;
        let aux = u32_at(need, 8).ok_or_else(broken)?;
        let next = u32_at(need, 12).ok_or_else(broken)?;
        let mut versions = Vec::new();
        let mut aux_at = at.checked_add(aux as usize).ok_or_else(broken)?;
        for _ in 0..versions_count {
            seen += 1;
            if seen > MAX_VERSION_RECORDS {
                return Err("too many version records".into());
            }
            let entry = record(aux_at).ok_or_else(broken)?;
            versions.push(string(u64::from(u32_at(entry, 8).ok_or_else(broken)?))?);
            let aux_next = u32_at(entry, 12).ok_or_else(broken)?;
            if aux_next == 0 {
                break;
            }
            aux_at = aux_at.checked_add(aux_next as usize).ok_or_else(broken)?;
        }
        needs.push(VersionNeed {
            library: string(u64::from(file))?,
            versions,
        });
        if next == 0 {
            break;
        }
        at = at.checked_add(next as usize).ok_or_else(broken)?;
    }
    Ok(needs)
}

/// `len` bytes at `offset`, or an error when the data ends first.
fn read_exact<S: Source + ?Sized>(source: &S, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let bytes = source.read_at(offset, len)?;
    if bytes.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(bytes)
}

fn split_path(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(bytes)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared object for x86_64 built byte by byte: one segment that loads the whole
    /// file at address 0x1000, a dynamic section, its strings and version records.
    fn library() -> Vec<u8> {
        let strings = b"\0libc.so.6\0libm.so.6\0libdemo.so.1\0$ORIGIN/../lib:/opt/x\0GLIBC_2.2.5\0GLIBC_2.35\0GLIBC_2.29\0/lib64/ld-linux-x86-64.so.2\0";
        let at = |name: &[u8]| {
            strings
                .windows(name.len() + 1)
                .position(|w| w[1..] == *name && w[0] == 0)
                .unwrap() as u64
                + 1
        };
        let (phoff, strtab, dynamic, verneed, interp) =
            (64u64, 0x200u64, 0x300u64, 0x400u64, 0x100u64);
        let base = 0x1000u64;
        let mut file = vec![0u8; 0x600];
        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2;
        file[5] = 1;
        file[16..18].copy_from_slice(&3u16.to_le_bytes());
        file[18..20].copy_from_slice(&62u16.to_le_bytes());
        file[32..40].copy_from_slice(&phoff.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&3u16.to_le_bytes());
        let mut put = |at: u64, bytes: &[u8]| {
            file[at as usize..at as usize + bytes.len()].copy_from_slice(bytes)
        };
        let segment = |kind: u32, offset: u64, len: u64| {
            let mut s = vec![0u8; 56];
            s[..4].copy_from_slice(&kind.to_le_bytes());
            s[8..16].copy_from_slice(&offset.to_le_bytes());
            s[16..24].copy_from_slice(&(base + offset).to_le_bytes());
            s[32..40].copy_from_slice(&len.to_le_bytes());
            s
        };
        put(phoff, &segment(PT_LOAD, 0, 0x600));
        put(phoff + 56, &segment(PT_DYNAMIC, dynamic, 0x100));
        put(phoff + 112, &segment(PT_INTERP, interp, 28));
        put(strtab, strings);
        put(interp, b"/lib64/ld-linux-x86-64.so.2\0");
        let tags: [(i64, u64); 9] = [
            (DT_NEEDED, at(b"libc.so.6")),
            (DT_NEEDED, at(b"libm.so.6")),
            (DT_SONAME, at(b"libdemo.so.1")),
            (DT_RUNPATH, at(b"$ORIGIN/../lib:/opt/x")),
            (DT_STRTAB, base + strtab),
            (DT_STRSZ, strings.len() as u64),
            (DT_VERNEED, base + verneed),
            (DT_VERNEEDNUM, 2),
            (DT_NULL, 0),
        ];
        for (i, (tag, value)) in tags.iter().enumerate() {
            put(dynamic + 16 * i as u64, &tag.to_le_bytes());
            put(dynamic + 16 * i as u64 + 8, &value.to_le_bytes());
        }
        // libc.so.6: GLIBC_2.2.5 and GLIBC_2.35; then libm.so.6: GLIBC_2.29.
        let need = |count: u16, file: u64, next: u32| {
            let mut n = vec![0u8; 16];
            n[..2].copy_from_slice(&1u16.to_le_bytes());
            n[2..4].copy_from_slice(&count.to_le_bytes());
            n[4..8].copy_from_slice(&(file as u32).to_le_bytes());
            n[8..12].copy_from_slice(&16u32.to_le_bytes());
            n[12..16].copy_from_slice(&next.to_le_bytes());
            n
        };
        let aux = |name: u64, next: u32| {
            let mut a = vec![0u8; 16];
            a[8..12].copy_from_slice(&(name as u32).to_le_bytes());
            a[12..16].copy_from_slice(&next.to_le_bytes());
            a
        };
        put(verneed, &need(2, at(b"libc.so.6"), 48));
        put(verneed + 16, &aux(at(b"GLIBC_2.2.5"), 16));
        put(verneed + 32, &aux(at(b"GLIBC_2.35"), 0));
        put(verneed + 48, &need(1, at(b"libm.so.6"), 0));
        put(verneed + 64, &aux(at(b"GLIBC_2.29"), 0));
        file
    }

    #[test]
    fn dynamic_section_gives_needs_paths_name_and_versions() {
        let object = parse(library().as_slice()).unwrap().unwrap();
        assert_eq!(object.machine, 62);
        assert_eq!(
            object.interpreter.as_deref(),
            Some(&b"/lib64/ld-linux-x86-64.so.2"[..])
        );
        assert_eq!(
            object.needed,
            [b"libc.so.6".to_vec(), b"libm.so.6".to_vec()]
        );
        assert_eq!(object.soname.as_deref(), Some(&b"libdemo.so.1"[..]));
        assert_eq!(
            object.runpath,
            [b"$ORIGIN/../lib".to_vec(), b"/opt/x".to_vec()]
        );
        assert!(object.rpath.is_empty());
        assert_eq!(
            object.version_needs,
            [
                VersionNeed {
                    library: b"libc.so.6".to_vec(),
                    versions: vec![b"GLIBC_2.2.5".to_vec(), b"GLIBC_2.35".to_vec()],
                },
                VersionNeed {
                    library: b"libm.so.6".to_vec(),
                    versions: vec![b"GLIBC_2.29".to_vec()],
                },
            ]
        );
    }

    #[test]
    fn what_is_not_a_loadable_64_bit_object_is_none() {
        assert_eq!(parse(&b"#!/bin/sh\necho hi\n"[..]), Ok(None));
        assert_eq!(parse(&b""[..]), Ok(None));
        let mut relocatable = library();
        relocatable[16] = 1;
        assert_eq!(parse(relocatable.as_slice()), Ok(None));
        let mut thirty_two_bit = library();
        thirty_two_bit[4] = 1;
        assert_eq!(parse(thirty_two_bit.as_slice()), Ok(None));
        // A bare header, as the arch lint's tests write: an object with nothing to load.
        let bare = &library()[..64];
        let mut bare = bare.to_vec();
        bare[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(parse(bare.as_slice()).unwrap().unwrap().machine, 62);
    }

    #[test]
    fn truncated_or_corrupt_objects_are_errors_never_panics() {
        let whole = library();
        for len in 0..whole.len() {
            let _ = parse(&whole[..len]);
        }
        // Every byte of the tables set to 0xff in turn, then to 0x7f.
        for at in 64..whole.len() {
            for value in [0xff, 0x7f] {
                let mut bad = whole.clone();
                bad[at] = value;
                let _ = parse(bad.as_slice());
            }
        }
        let mut bad = whole.clone();
        bad[0x300 + 8..0x300 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(bad.as_slice()).unwrap_err().contains("string table"));
        let cut = &whole[..0x420];
        assert!(parse(cut).unwrap_err().contains("version record"));
    }
}
