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

pub const MB: u64 = 1024 * 1024;
pub const UNZIPPED_LIMIT: u64 = 250 * MB;
pub const DIRECT_UPLOAD_LIMIT: u64 = 50 * MB;
/// Above this share of `/tmp`, the function has little room left for its own files.
const TMP_TIGHT_PERCENT: u64 = 80;

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
            "{:<9} {:>11} of {} MiB ({}%)",
            self.what,
            mebibytes(self.used),
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
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MB as f64)
}

/// `count` with its noun: "1 symlink", "2 symlinks".
pub fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What the output takes, where Lambda counts it.
pub struct Sizes {
    /// Everything in the deployment: the bootstrap with its payload and the task part.
    pub unzipped: u64,
    /// The zip as uploaded.
    pub zip: u64,
    /// What the first start writes into `/tmp` (`space::Need`).
    pub extracted: u64,
    pub ephemeral_storage_mb: u64,
    /// `--task-budget`: how much of the 250 MB coldpack may fill (0: none set).
    pub task_budget: u64,
}

/// The budgets, in the order the summary prints them.
pub fn budgets(sizes: &Sizes) -> Vec<Budget> {
    let mut budgets = vec![unzipped_budget(sizes.unzipped)];
    if sizes.task_budget > 0 {
        let over = sizes.unzipped > sizes.task_budget;
        budgets.push(Budget {
            what: "task",
            used: sizes.unzipped,
            limit: sizes.task_budget,
            verdict: if over { Verdict::Over } else { Verdict::Fits },
            advice: over.then(|| {
                "over --task-budget, which leaves room for the function's own code and layers"
                    .into()
            }),
        });
    }
    budgets.push(zip_budget(sizes.zip));
    budgets.push(tmp_budget(sizes.extracted, sizes.ephemeral_storage_mb));
    budgets
}

fn unzipped_budget(unzipped: u64) -> Budget {
    let over = unzipped > UNZIPPED_LIMIT;
    Budget {
        what: "unzipped",
        used: unzipped,
        limit: UNZIPPED_LIMIT,
        verdict: if over {
            Verdict::OverHard
        } else {
            Verdict::Fits
        },
        advice: Some(if over {
            "Lambda refuses code and layers over 250 MB unzipped: --exclude what the runtime does not need, lower --task-budget, or raise --level".into()
        } else {
            "with the function's other layers, if any".into()
        }),
    }
}

fn zip_budget(zip: u64) -> Budget {
    let over = zip > DIRECT_UPLOAD_LIMIT;
    Budget {
        what: "zip",
        used: zip,
        limit: DIRECT_UPLOAD_LIMIT,
        verdict: if over { Verdict::Over } else { Verdict::Fits },
        advice: over.then(|| {
            "over 50 MB cannot be uploaded directly: copy it to S3 and deploy from there (aws lambda create-function --code S3Bucket=BUCKET,S3Key=KEY)".into()
        }),
    }
}

fn tmp_budget(extracted: u64, ephemeral_storage_mb: u64) -> Budget {
    let tmp = ephemeral_storage_mb * MB;
    let verdict = if extracted > tmp {
        Verdict::OverHard
    } else if extracted * 100 > tmp * TMP_TIGHT_PERCENT {
        Verdict::Tight
    } else {
        Verdict::Fits
    };
    let needed_mb = (extracted.div_ceil(MB) * 100 / TMP_TIGHT_PERCENT).div_ceil(512) * 512;
    let advice = match verdict {
        Verdict::Fits => None,
        _ if needed_mb > 10240 => Some(
            "the tree is larger than Lambda's largest /tmp (10240 MB): make it smaller, or raise --task-budget".to_string(),
        ),
        Verdict::OverHard => Some(format!(
            "the first start would run out of space: set the function's ephemeral storage to {needed_mb} MB or more (EphemeralStorage), and say so with --ephemeral-storage"
        )),
        _ => Some(format!(
            "little room is left for the function's own files in /tmp: consider {needed_mb} MB of ephemeral storage"
        )),
    };
    Budget {
        what: "/tmp",
        used: extracted,
        limit: tmp,
        verdict,
        advice,
    }
}
