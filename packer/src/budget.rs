//! Lambda's size limits, checked before the user uploads: each budget says how much
//! of a limit the output uses and what to do when it does not fit.
//!
//! Limits from <https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>:
//! 250 MB unzipped for the function's code and all its layers together (Lambda's error
//! names 262144000 bytes), 50 MB for a zip uploaded directly (larger ones go through
//! S3), and `/tmp` of 512 MB unless the function's ephemeral storage is raised (up to
//! 10240 MB). Lambda's "MB" is 2^20 bytes, a MiB: sizes are printed in MiB, and the
//! limits with them.

use std::fmt;

use coldpack_bootstrap::manifest::{Entry, EntryKind};

pub const MB: u64 = 1024 * 1024;
pub const UNZIPPED_LIMIT: u64 = 250 * MB;
pub const DIRECT_UPLOAD_LIMIT: u64 = 50 * MB;
/// Above this share of `/tmp`, the function has little room left for its own files.
const TMP_TIGHT_PERCENT: u64 = 80;
/// The block size of Lambda's `/tmp`; the bootstrap counts space the same way.
const BLOCK: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fits,
    /// Fits, but close enough to the limit to mention.
    Tight,
    /// Over a limit that can be worked around (the direct upload).
    Over,
    /// Over a hard limit: the function cannot be created or cannot start.
    OverHard,
}

#[derive(Debug, Clone)]
pub struct Budget {
    pub what: &'static str,
    pub used: u64,
    pub limit: u64,
    pub verdict: Verdict,
    /// What to do about it, when there is something to do.
    pub advice: Option<String>,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<9} {:>10} of {} MiB ({}%)",
            self.what,
            megabytes(self.used),
            self.limit / MB,
            self.used * 100 / self.limit.max(1)
        )?;
        let verdict = match self.verdict {
            Verdict::Fits => "fits",
            Verdict::Tight => "fits, tight",
            Verdict::Over => "over",
            Verdict::OverHard => "OVER THE LIMIT",
        };
        write!(f, "  {verdict}")?;
        if let Some(advice) = &self.advice {
            write!(f, ": {advice}")?;
        }
        Ok(())
    }
}

/// A size for people, in MiB (2^20 bytes), which is what Lambda calls MB.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MB as f64)
}

/// `count` with its noun: "1 symlink", "2 symlinks".
pub fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What the tree takes once extracted: contents rounded up to blocks, a block a
/// directory; links take an inode and no block.
pub fn extracted_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|entry| match entry.kind {
            EntryKind::File { size, .. } => size.div_ceil(BLOCK) * BLOCK,
            EntryKind::Dir => BLOCK,
            EntryKind::Symlink { .. } | EntryKind::Hardlink { .. } => 0,
        })
        .sum()
}

/// The three budgets: `unzipped` is what Lambda counts against 250 MB (the bootstrap),
/// `zip` the upload, `extracted` what the first start writes into `/tmp`.
pub fn budgets(unzipped: u64, zip: u64, extracted: u64, ephemeral_storage_mb: u64) -> Vec<Budget> {
    let unzipped_budget = Budget {
        what: "unzipped",
        used: unzipped,
        limit: UNZIPPED_LIMIT,
        verdict: if unzipped > UNZIPPED_LIMIT {
            Verdict::OverHard
        } else {
            Verdict::Fits
        },
        advice: if unzipped > UNZIPPED_LIMIT {
            Some("Lambda refuses code and layers over 250 MB unzipped: --exclude what the runtime does not need, or raise --level".into())
        } else {
            Some("with the function's other layers, if any".into())
        },
    };
    let zip_budget = Budget {
        what: "zip",
        used: zip,
        limit: DIRECT_UPLOAD_LIMIT,
        verdict: if zip > DIRECT_UPLOAD_LIMIT {
            Verdict::Over
        } else {
            Verdict::Fits
        },
        advice: (zip > DIRECT_UPLOAD_LIMIT).then(|| {
            "over 50 MB cannot be uploaded directly: copy it to S3 and deploy from there (aws lambda create-function --code S3Bucket=BUCKET,S3Key=KEY)".into()
        }),
    };
    let tmp = ephemeral_storage_mb * MB;
    let tmp_verdict = if extracted > tmp {
        Verdict::OverHard
    } else if extracted * 100 > tmp * TMP_TIGHT_PERCENT {
        Verdict::Tight
    } else {
        Verdict::Fits
    };
    let needed_mb = (extracted.div_ceil(MB) * 100 / TMP_TIGHT_PERCENT).div_ceil(512) * 512;
    let tmp_advice = match tmp_verdict {
        Verdict::Fits => None,
        _ if needed_mb > 10240 => Some(
            "the tree is larger than Lambda's largest /tmp (10240 MB): make it smaller".to_string(),
        ),
        Verdict::OverHard => Some(format!(
            "the first start would run out of space: set the function's ephemeral storage to {needed_mb} MB or more (EphemeralStorage), and say so with --ephemeral-storage"
        )),
        _ => Some(format!(
            "little room is left for the function's own files in /tmp: consider {needed_mb} MB of ephemeral storage"
        )),
    };
    vec![
        unzipped_budget,
        zip_budget,
        Budget {
            what: "/tmp",
            used: extracted,
            limit: tmp,
            verdict: tmp_verdict,
            advice: tmp_advice,
        },
    ]
}
