//! `coldpack.toml`: the options of `pack`, kept next to the runtime so that a build is
//! one repeatable command. Merged with the command line into [`PackOptions`], which is
//! all the packer sees: a flag given on the command line wins over the file, `--arg`
//! replaces the file's `args`, `--env` overrides the file's variable of the same name,
//! and `--exclude` adds to the file's `exclude`.
//!
//! Where the file is looked for: `--config FILE`; else `coldpack.toml` in DIR's parent
//! directory (next to the runtime), used only if its `dir` is absent or names DIR;
//! else, when DIR is not given, `./coldpack.toml`. Paths in the file are relative to
//! the file's directory.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::cli::{Arch, PackArgs, Runtime};

pub const FILE_NAME: &str = "coldpack.toml";
pub const DEFAULT_LEVEL: i32 = 19;
/// The image a function runs on when neither `--runtime` nor the file names one.
pub const DEFAULT_RUNTIME: Runtime = Runtime::ProvidedAl2023;
pub const DEFAULT_EPHEMERAL_STORAGE_MB: u64 = 512;
/// The default `--task-budget`: 200 of Lambda's 250 MB, leaving 50 MB for the
/// function's own code and other layers.
pub const DEFAULT_TASK_BUDGET: u64 = 200 << 20;

/// What `coldpack.toml` may hold: the long names of `pack`'s options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub dir: Option<PathBuf>,
    pub entrypoint: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: toml::Table,
    pub name: Option<String>,
    pub level: Option<i32>,
    pub out: Option<PathBuf>,
    pub bootstrap: Option<PathBuf>,
    #[serde(default)]
    pub zip: bool,
    #[serde(default)]
    pub layer: bool,
    pub arch: Option<Arch>,
    pub ephemeral_storage: Option<u64>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(alias = "task_budget")]
    pub task_budget: Option<toml::Value>,
    #[serde(default, alias = "keep_in_tmp")]
    pub keep_in_tmp: Vec<String>,
    pub runtime: Option<Runtime>,
    #[serde(default)]
    pub allow_incompatible: bool,
    #[serde(default)]
    pub force: bool,
}

/// Which zip `pack` writes beside the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZipKind {
    /// `function.zip`, extracted by Lambda into /var/task.
    Function,
    /// `layer.zip`, extracted into /opt.
    Layer,
}

/// Everything `pack` needs, resolved.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub dir: PathBuf,
    pub entrypoint: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<OsString>,
    pub name: Option<String>,
    pub level: i32,
    pub out: PathBuf,
    pub bootstrap: Option<PathBuf>,
    pub zip: Option<ZipKind>,
    /// `None`: the tree's ELF files decide (see [`crate::stock::choose_arch`]).
    pub arch: Option<Arch>,
    pub ephemeral_storage_mb: u64,
    pub exclude: Vec<String>,
    /// Bytes of code storage coldpack may fill.
    pub task_budget: u64,
    pub keep_in_tmp: Vec<String>,
    pub runtime: Runtime,
    pub allow_incompatible: bool,
    pub force: bool,
    /// The config file that was read, if any.
    pub config: Option<PathBuf>,
}

impl PackOptions {
    /// Options for a plain pack with defaults, as tests and library users want them.
    pub fn new(dir: &Path, entrypoint: &str, out: &Path) -> PackOptions {
        PackOptions {
            dir: dir.to_owned(),
            entrypoint: entrypoint.into(),
            args: Vec::new(),
            env: Vec::new(),
            name: None,
            level: DEFAULT_LEVEL,
            out: out.to_owned(),
            bootstrap: None,
            zip: None,
            arch: None,
            ephemeral_storage_mb: DEFAULT_EPHEMERAL_STORAGE_MB,
            exclude: Vec::new(),
            task_budget: DEFAULT_TASK_BUDGET,
            keep_in_tmp: Vec::new(),
            runtime: DEFAULT_RUNTIME,
            allow_incompatible: false,
            force: false,
            config: None,
        }
    }
}

/// Reads the config file that applies, if any, and merges the command line over it.
pub fn resolve(args: &PackArgs) -> Result<PackOptions> {
    let (config_path, file) = config_file(args)?;
    let base = config_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default();
    let from_file = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));

    let dir = args.dir.clone().or_else(|| from_file(&file.dir));
    let Some(dir) = dir else {
        bail!("no runtime directory: give DIR, or `dir` in {FILE_NAME}");
    };
    let Some(entrypoint) = args.entrypoint.clone().or(file.entrypoint.clone()) else {
        bail!("no entrypoint: give --entrypoint PATH-IN-DIR (e.g. bin/python3), or `entrypoint` in {FILE_NAME}");
    };
    let Some(out) = args.out.clone().or_else(|| from_file(&file.out)) else {
        bail!("no output directory: give -o OUT-DIR, or `out` in {FILE_NAME}");
    };
    let level = args.level.or(file.level).unwrap_or(DEFAULT_LEVEL);
    if !(1..=22).contains(&level) {
        bail!("level {level} in {FILE_NAME} is not a zstd level from 1 to 22");
    }
    let ephemeral_storage_mb = args
        .ephemeral_storage
        .or(file.ephemeral_storage)
        .unwrap_or(DEFAULT_EPHEMERAL_STORAGE_MB);
    if !(512..=10240).contains(&ephemeral_storage_mb) {
        bail!("ephemeral-storage {ephemeral_storage_mb} in {FILE_NAME} is not from 512 to 10240 MB, the range Lambda accepts");
    }
    Ok(PackOptions {
        dir,
        entrypoint,
        args: if args.args.is_empty() {
            file.args.iter().map(OsString::from).collect()
        } else {
            args.args.clone()
        },
        env: env(&file, &args.env)?,
        name: args.name.clone().or(file.name.clone()),
        level,
        out,
        bootstrap: args
            .bootstrap
            .clone()
            .or_else(|| from_file(&file.bootstrap)),
        zip: zip_kind(args, &file),
        arch: args.arch.or(file.arch),
        ephemeral_storage_mb,
        exclude: [&file.exclude[..], &args.exclude[..]].concat(),
        task_budget: task_budget(args, &file)?,
        keep_in_tmp: [&file.keep_in_tmp[..], &args.keep_in_tmp[..]].concat(),
        runtime: args.runtime.or(file.runtime).unwrap_or(DEFAULT_RUNTIME),
        allow_incompatible: args.allow_incompatible || file.allow_incompatible,
        force: args.force || file.force,
        config: config_path,
    })
}

/// The config file that applies (`--config`, else the one [`find`] finds, none with
/// `--no-config`) and its path; an empty one when there is none.
fn config_file(args: &PackArgs) -> Result<(Option<PathBuf>, ConfigFile)> {
    let found = if args.no_config {
        None
    } else if let Some(path) = &args.config {
        Some((path.clone(), read(path)?))
    } else {
        find(args.dir.as_deref())?
    };
    Ok(match found {
        Some((path, file)) => (Some(path), file),
        None => (None, ConfigFile::default()),
    })
}

/// The file's `env` table, less the keys the command line sets, then the command
/// line's `--env` pairs.
fn env(file: &ConfigFile, from_args: &[OsString]) -> Result<Vec<OsString>> {
    let mut env: Vec<OsString> = Vec::new();
    for (key, value) in &file.env {
        let Some(value) = value.as_str() else {
            bail!("env.{key} in {FILE_NAME} must be a string");
        };
        let overridden = from_args.iter().any(|pair| {
            pair.to_string_lossy()
                .split_once('=')
                .is_some_and(|(k, _)| k == key)
        });
        if !overridden {
            env.push(format!("{key}={value}").into());
        }
    }
    env.extend(from_args.iter().cloned());
    Ok(env)
}

/// `--layer` wins over `--zip`; the file's choice applies when the command line
/// makes none.
fn zip_kind(args: &PackArgs, file: &ConfigFile) -> Option<ZipKind> {
    if args.layer || (file.layer && !args.zip) {
        Some(ZipKind::Layer)
    } else if args.zip || file.zip {
        Some(ZipKind::Function)
    } else {
        None
    }
}

/// `--task-budget`, else `task-budget` in the file (a size string or a number of
/// bytes), else the default; never over Lambda's code storage.
fn task_budget(args: &PackArgs, file: &ConfigFile) -> Result<u64> {
    let task_budget = match (&args.task_budget, &file.task_budget) {
        (Some(text), _) => {
            parse_size(text).map_err(|why| anyhow!("--task-budget {text:?} {why}"))?
        }
        (None, Some(toml::Value::Integer(n))) if *n >= 0 => *n as u64,
        (None, Some(toml::Value::String(text))) => {
            parse_size(text).map_err(|why| anyhow!("task-budget {text:?} in {FILE_NAME} {why}"))?
        }
        (None, Some(other)) => {
            bail!("task-budget {other} in {FILE_NAME} is not a size like \"200MB\"")
        }
        (None, None) => DEFAULT_TASK_BUDGET,
    };
    if task_budget > crate::budget::UNZIPPED_LIMIT {
        bail!("a task budget of {task_budget} bytes is over Lambda's 250 MB of code storage");
    }
    Ok(task_budget)
}

fn read(path: &Path) -> Result<ConfigFile> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid {FILE_NAME}", path.display()))
}

/// The config file that applies to `dir`, if there is one.
fn find(dir: Option<&Path>) -> Result<Option<(PathBuf, ConfigFile)>> {
    let Some(dir) = dir else {
        let path = PathBuf::from(FILE_NAME);
        return Ok(if path.is_file() {
            Some((path.clone(), read(&path)?))
        } else {
            None
        });
    };
    let Ok(canonical) = fs::canonicalize(dir) else {
        return Ok(None); // the walk reports the missing directory
    };
    let Some(parent) = canonical.parent() else {
        return Ok(None);
    };
    let path = parent.join(FILE_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    let file = read(&path)?;
    if let Some(named) = &file.dir {
        // A file that describes a sibling runtime is not about this one.
        if fs::canonicalize(parent.join(named)).ok().as_deref() != Some(canonical.as_path()) {
            return Ok(None);
        }
    }
    Ok(Some((path, file)))
}

/// A size as `--task-budget` takes it: bytes, or a number with K, M or G (optionally
/// followed by B or iB), all powers of 1024 as Lambda's own limits are.
pub fn parse_size(text: &str) -> std::result::Result<u64, &'static str> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err("is not a size like 200MB, 120MiB or 0"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| "is not a size like 200MB, 120MiB or 0")?;
    Ok((value * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_read_as_lambda_counts_them() {
        assert_eq!(parse_size("200MB"), Ok(200 << 20));
        assert_eq!(parse_size("120 MiB"), Ok(120 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
