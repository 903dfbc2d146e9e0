//! The zip Lambda is given: `bootstrap` at the root and the task part beside it.
//!
//! Lambda takes a file's permissions from the Unix mode in the upper 16 bits of the
//! central directory's external attributes, which only counts when "version made by"
//! names Unix (Info-ZIP's convention); without it the bootstrap would not be
//! executable. The payload is zstd already, so the bootstrap is stored, not deflated
//! again; the task part's files are deflated where that pays, judged on their first
//! 64 KiB. Entries come in a fixed order with times taken from the manifest, so the
//! same pack always gives the same zip.
//!
//! A layer's zip is laid out the same way: Lambda extracts layers into `/opt`, and runs
//! `/opt/bootstrap` when the function's own code has none
//! (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html>).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use coldpack_bootstrap::manifest::Mtime;
use coldpack_bootstrap::task::{TaskEntry, TaskIndex};
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

    /// Where Lambda puts the bootstrap.
    pub fn place(self) -> &'static str {
        match self {
            ZipKind::Function => "/var/task",
            ZipKind::Layer => "/opt",
        }
    }
}

/// Bytes a zip entry adds to its contents: local header, central directory entry,
/// the name twice, a zip64 margin.
fn entry_overhead(name_len: usize) -> u64 {
    30 + 46 + 2 * name_len as u64 + 64
}

/// The zip's size if nothing in the task part compressed: what the budget checks
/// before anything is written.
pub fn estimated_len(bootstrap_len: u64, task: &TaskIndex) -> u64 {
    let task_dir = 64; // `coldpack-NAME.<id>/`, at most
    22 + bootstrap_len
        + entry_overhead("bootstrap".len())
        + task
            .entries
            .iter()
            .map(|e| e.size + entry_overhead(task_dir + e.path.len()))
            .sum::<u64>()
}

/// Writes `out_dir/<kind's name>` holding `bootstrap` and the task part at `task`
/// (its directory and index), through a temporary name; returns its path and size.
pub fn write_zip(
    out_dir: &Path,
    kind: ZipKind,
    bootstrap: &Path,
    task: Option<(&Path, &TaskIndex)>,
) -> Result<(PathBuf, u64)> {
    let target = out_dir.join(kind.file_name());
    let temporary = out_dir.join(format!(
        ".{}.coldpack-{}",
        kind.file_name(),
        std::process::id()
    ));
    let written = (|| -> zip::result::ZipResult<u64> {
        let mut zip = ZipWriter::new(BufWriter::new(File::create(&temporary)?));
        let len = fs::metadata(bootstrap)?.len();
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o755)
            .large_file(len >= u64::from(u32::MAX));
        zip.start_file("bootstrap", options)?;
        io::copy(&mut File::open(bootstrap)?, &mut zip)?;
        if let Some((dir, index)) = task {
            add_task_part(&mut zip, dir, index)?;
        }
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

/// The task part's directory and every entry of its index, in order.
fn add_task_part(
    zip: &mut ZipWriter<BufWriter<File>>,
    dir: &Path,
    index: &TaskIndex,
) -> zip::result::ZipResult<()> {
    let top = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let newest = index
        .entries
        .iter()
        .map(|e| e.mtime)
        .max()
        .unwrap_or_default();
    let dir_options = |mtime: Mtime| {
        SimpleFileOptions::default()
            .last_modified_time(dos_time(mtime))
            .unix_permissions(0o755)
    };
    zip.add_directory(format!("{top}/"), dir_options(newest))?;
    for entry in &index.entries {
        // The split keeps only names that are UTF-8.
        let name = format!("{top}/{}", String::from_utf8_lossy(&entry.path));
        if entry.dir {
            zip.add_directory(format!("{name}/"), dir_options(entry.mtime))?;
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(&entry.path));
        let options = SimpleFileOptions::default()
            .compression_method(method_for(&path, entry)?)
            .last_modified_time(dos_time(entry.mtime))
            .unix_permissions(entry.mode)
            .large_file(entry.size >= u64::from(u32::MAX));
        zip.start_file(name, options)?;
        io::copy(&mut File::open(&path)?, zip)?;
    }
    Ok(())
}

/// Deflated when a sample of the file shrinks by a tenth, stored otherwise (already
/// compressed data, tiny files).
fn method_for(path: &Path, entry: &TaskEntry) -> io::Result<CompressionMethod> {
    if entry.size < 256 {
        return Ok(CompressionMethod::Stored);
    }
    let mut sample = Vec::with_capacity(64 << 10);
    File::open(path)?.take(64 << 10).read_to_end(&mut sample)?;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&sample)?;
    let deflated = encoder.finish()?.len();
    Ok(if deflated * 10 < sample.len() * 9 {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    })
}

/// An mtime as a zip's DOS time (UTC, even seconds, 1980 to 2107).
fn dos_time(mtime: Mtime) -> DateTime {
    let days = mtime.sec.div_euclid(86_400);
    let secs = mtime.sec.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(1980, 2107);
    DateTime::from_date_and_time(
        year as u16,
        month,
        day,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
    )
    .unwrap_or_default()
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (H. Hinnant's
/// algorithm, <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
