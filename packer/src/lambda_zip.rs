//! The zip Lambda is given: one file, `bootstrap`, at the root.
//!
//! Lambda takes a file's permissions from the Unix mode in the upper 16 bits of the
//! central directory's external attributes, which only counts when "version made by"
//! names Unix (Info-ZIP's convention); without it the bootstrap would not be
//! executable. The payload is zstd already, so the file is stored, not deflated again.
//! A fixed timestamp (1980-01-01, the zip epoch) makes the zip byte-identical for the
//! same bootstrap.
//!
//! A layer's zip is laid out the same way: Lambda extracts layers into `/opt`, and runs
//! `/opt/bootstrap` when the function's own code has none
//! (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html>).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::config::ZipKind;

impl ZipKind {
    pub fn file_name(self) -> &'static str {
        match self {
            ZipKind::Function => "function.zip",
            ZipKind::Layer => "layer.zip",
        }
    }
}

/// What a stored one-file zip adds to the file: local header, central directory
/// entry and end record, each with the name, and a zip64 margin.
pub fn estimated_len(bootstrap_len: u64) -> u64 {
    bootstrap_len + 30 + 46 + 22 + 2 * "bootstrap".len() as u64 + 64
}

/// Writes `out_dir/<kind's name>` holding `bootstrap`, through a temporary name, and
/// returns its path and size.
pub fn write_zip(out_dir: &Path, kind: ZipKind, bootstrap: &Path) -> Result<(PathBuf, u64)> {
    let target = out_dir.join(kind.file_name());
    let temporary = out_dir.join(format!(
        ".{}.coldpack-{}",
        kind.file_name(),
        std::process::id()
    ));
    let written = (|| -> zip::result::ZipResult<u64> {
        let len = fs::metadata(bootstrap)?.len();
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o755)
            .large_file(len >= u64::from(u32::MAX));
        let mut zip = ZipWriter::new(BufWriter::new(File::create(&temporary)?));
        zip.start_file("bootstrap", options)?;
        io::copy(&mut File::open(bootstrap)?, &mut zip)?;
        zip.finish()?.flush()?;
        fs::set_permissions(
            &temporary,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        fs::rename(&temporary, &target)?;
        Ok(fs::metadata(&target)?.len())
    })();
    match written {
        Ok(len) => Ok((target, len)),
        Err(e) => {
            let _ = fs::remove_file(&temporary);
            Err(anyhow!("cannot write {}: {e}", target.display()))
        }
    }
}
