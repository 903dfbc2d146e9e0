//! Little-endian fields for the payload's binary sections.
//!
//! The reader is the first code that touches bytes an attacker may have written, so
//! every read is bounds-checked and every count is checked against the bytes that
//! remain before anything is allocated for it: a hostile length can make a read
//! fail, never make the bootstrap allocate gigabytes or panic.

use crate::error::{Error, Result};

/// Appends fields to a section under construction (used by the packer).
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
    }
    /// A length-prefixed byte string.
    pub fn blob(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("fields are far below 4 GiB"));
        self.raw(v);
    }
}

/// Reads fields from a section, failing with `PayloadCorrupt` on any overrun.
pub struct Reader<'a> {
    bytes: &'a [u8],
    section: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], section: &'static str) -> Reader<'a> {
        Reader { bytes, section }
    }

    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(Error::corrupt(format!(
                "payload {} ends too early (wanted {n} more bytes, {} left)",
                self.section,
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn blob(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.raw(len)
    }

    /// A count of items that each take at least `min_size` bytes: refused when the
    /// section cannot possibly hold that many, so a lie never drives an allocation.
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.bytes.len() {
            return Err(Error::corrupt(format!(
                "payload {} claims {n} items but has only {} bytes left",
                self.section,
                self.bytes.len()
            )));
        }
        Ok(n)
    }

    /// Bytes not yet read.
    pub fn left(&self) -> usize {
        self.bytes.len()
    }

    pub fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "payload {} has {} unexpected trailing bytes",
                self.section,
                self.bytes.len()
            )))
        }
    }
}

/// Fixed-width fields read in place, at offsets the caller has already checked.
pub fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

pub fn le_i64(bytes: &[u8], at: usize) -> i64 {
    le_u64(bytes, at) as i64
}
