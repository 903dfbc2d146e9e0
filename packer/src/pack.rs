//! `coldpack pack`: from a runtime directory to `OUT-DIR/bootstrap` and, beside it,
//! the task part (`coldpack-NAME.<id>/`, the share of the tree kept as plain files in
//! the deployment; see `split`).
//!
//! The steps: read the options and the launch section; resolve the entrypoint inside
//! the tree; walk the tree; lint it; split it between the deployment and the payload;
//! stage the task part; compress the rest into chunks; lay the payload out with the
//! format's own `Assembly`; check Lambda's limits; and only then write. Everything
//! that can be refused is refused before OUT-DIR gets anything but a temporary
//! directory that is removed again; the bootstrap is written to a temporary name and
//! renamed over `bootstrap` only when complete, so a failed pack leaves nothing
//! half-written.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use coldpack_bootstrap::launch::{valid_env_key, valid_name, Launch};
use coldpack_bootstrap::manifest::{self, Entry, EntryKind, Manifest, Plan, MAX_MANIFEST};
use coldpack_bootstrap::payload::{self, deflate_section, sha256, Assembly, Sections, Trailer};
use coldpack_bootstrap::space::Need;
use coldpack_bootstrap::task::{self, TaskIndex};

use crate::budget::{self, counted, mebibytes, Budget, Sizes, Verdict};
use crate::cli::{Arch, PackArgs};
use crate::compat;
use crate::compress;
use crate::config::{self, PackOptions, ZipKind};
use crate::head;
use crate::lambda_zip;
use crate::lint::{self, Elf, Lint};
use crate::progress::Progress;
use crate::resolve::{self, resolve};
use crate::say;
use crate::split::{self, Rules, Split};
use crate::stock;
use crate::task_part::{self, Staged};
use crate::walk::{self, walk, Globs, Walked};

pub fn cmd_pack(args: &PackArgs) -> Result<()> {
    let options = config::resolve(args)?;
    if let Some(path) = &options.config {
        say!("coldpack: options from {}", path.display());
    }
    let packed = pack(&options, &Progress::for_stderr())?;
    for warning in &packed.warnings {
        say!("coldpack: warning: {warning}");
    }
    say!("{}", packed.summary());
    Ok(())
}

/// What `pack` wrote, for the summary.
pub struct Packed {
    pub path: PathBuf,
    /// The walked tree, before the split.
    pub walked: Vec<Entry>,
    /// The `/tmp` tree the payload carries.
    pub manifest: Manifest,
    pub task: TaskIndex,
    /// The task part's directory, when anything is kept.
    pub task_dir: Option<PathBuf>,
    pub saved_nanos: u64,
    pub id: [u8; 32],
    /// The machine the stock bootstrap is built for.
    pub arch: Arch,
    pub bootstrap_len: u64,
    pub payload_len: u64,
    pub level: i32,
    pub budgets: Vec<Budget>,
    /// The zip written beside the bootstrap, its kind and size.
    pub zip: Option<(PathBuf, ZipKind, u64)>,
    pub warnings: Vec<String>,
}

/// Counts of entries by kind, as a phrase.
pub fn kinds(entries: &[Entry]) -> String {
    let count = |f: fn(&EntryKind) -> bool| entries.iter().filter(|e| f(&e.kind)).count();
    [
        counted(
            count(|k| matches!(k, EntryKind::File { .. })),
            "file",
            "files",
        ),
        counted(count(|k| *k == EntryKind::Dir), "directory", "directories"),
        counted(
            count(|k| matches!(k, EntryKind::Symlink { .. })),
            "symlink",
            "symlinks",
        ),
        counted(
            count(|k| matches!(k, EntryKind::Hardlink { .. })),
            "hardlink",
            "hardlinks",
        ),
    ]
    .join(", ")
}

impl Packed {
    pub fn file_len(&self) -> u64 {
        self.bootstrap_len + self.payload_len + payload::TRAILER_LEN as u64
    }

    pub fn summary(&self) -> String {
        let bytes_in: u64 = self.walked.iter().map(Entry::file_size).sum();
        let extracted = self.manifest.entries();
        let extracted_bytes: u64 = extracted.iter().map(Entry::file_size).sum();
        let bytes_out: u64 = self.manifest.chunks.iter().map(|c| c.compressed_len).sum();
        let mut out = format!(
            "coldpack: packed {}\n  entries   {}, {} in all\n",
            self.path.display(),
            kinds(&self.walked),
            mebibytes(bytes_in),
        );
        out.push_str(&split_lines(self, extracted.len(), extracted_bytes));
        out.push_str(&format!(
            "  payload   {} -> {}, {} at zstd level {}\n  bootstrap {} bytes: stock bootstrap for {} {} + payload {}\n",
            mebibytes(extracted_bytes),
            mebibytes(bytes_out),
            counted(self.manifest.chunks.len(), "chunk", "chunks"),
            self.level,
            self.file_len(),
            self.arch.as_str(),
            self.bootstrap_len,
            self.payload_len,
        ));
        if let Some((path, kind, len)) = &self.zip {
            out.push_str(&format!(
                "  zip       {} ({len} bytes): bootstrap mode 0755 and the task part, for {}\n",
                path.display(),
                kind.place()
            ));
        }
        for (i, budget) in self.budgets.iter().enumerate() {
            let label = if i == 0 { "budgets" } else { "" };
            out.push_str(&format!("  {label:<9} {budget}\n"));
        }
        out.push_str(&format!("  payload   sha256 {}", payload::hex(&self.id)));
        out
    }
}

/// The summary's lines on where the tree goes: the deployment or `/tmp`.
pub fn split_lines(packed: &Packed, extracted: usize, extracted_bytes: u64) -> String {
    let kept = match &packed.task_dir {
        Some(dir) => format!(
            "  kept      {} ({}) in the deployment, {}/: about {} ms less per cold start\n",
            counted(packed.task.entries.len(), "entry", "entries"),
            mebibytes(packed.task.bytes()),
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            packed.saved_nanos / 1_000_000
        ),
        None => "  kept      nothing in the deployment (--task-budget)\n".to_owned(),
    };
    let extracted = if packed.manifest.is_direct() {
        "  extracted nothing: the whole tree is in the deployment, /tmp is not used\n".to_owned()
    } else {
        // Counted as `inspect` counts them: the links apart.
        let links = task_part::links(&packed.manifest).count();
        format!(
            "  extracted {} ({}) into /tmp at a cold start, and {} to the deployment\n",
            counted(extracted - links, "entry", "entries"),
            mebibytes(extracted_bytes),
            counted(links, "link", "links")
        )
    };
    kept + &extracted
}

pub fn pack(options: &PackOptions, progress: &Progress) -> Result<Packed> {
    let launch = launch(options)?;
    let excludes = Globs::new(&options.exclude, "--exclude")?;
    let keep_in_tmp = Globs::new(&options.keep_in_tmp, "--keep-in-tmp")?;
    let target = entrypoint_target(options, &launch, &excludes)?;
    let skip = output_inside(options)?;
    let stage = progress.stage("walking", 0, false);
    let walked = walk(&options.dir, &excludes, skip.as_deref())?;
    stage.finish(format!(
        "walked {} entries in {}",
        walked.entries.len(),
        options.dir.display()
    ));
    let entrypoint = walked
        .entries
        .iter()
        .position(|e| e.path == target)
        .ok_or_else(|| {
            anyhow!(
                "entrypoint {} was not walked",
                String::from_utf8_lossy(&target)
            )
        })?;
    let heads = head::read_heads(&walked.entries, &walked.sources)?;
    let elf: Vec<Option<Elf>> = heads.iter().map(|h| h.elf).collect();
    let arch = stock::choose_arch(options.arch, &elf, |i| {
        String::from_utf8_lossy(&walked.entries[i].path).into_owned()
    })?;
    let stock = stock_bootstrap(options.bootstrap.as_deref(), arch)?;
    let warnings = lint(options, arch, &launch, &walked, &elf, &stock, entrypoint)?;
    let rules = Rules {
        budget: options.task_budget,
        keep_in_tmp: &keep_in_tmp,
        entrypoint,
        bootstrap_len: stock.len() as u64,
    };
    let split = split::split(&walked, &heads, &rules, |files| {
        compress::estimate(&walked.entries, &walked.sources, files)
    })?;
    let mut warnings = warnings;
    warnings.extend(
        lint::timestamp_pycs(&walked.entries, &heads, &split.in_deployment).map(|l| l.message),
    );
    let task = task_part::stage(&split.task, &options.out)?;
    let built = build(&launch, &split, &task.index, options.level, progress)?;
    let mut packed = assemble_and_write(options, &launch, (&stock, arch), built, task)?;
    packed.walked = walked.entries;
    packed.saved_nanos = split.saved_nanos;
    packed.warnings = [warnings, std::mem::take(&mut packed.warnings)].concat();
    Ok(packed)
}

/// Lays the payload out, checks Lambda's limits, writes the output and the zip.
fn assemble_and_write(
    options: &PackOptions,
    launch: &Launch,
    (stock, arch): (&[u8], Arch),
    built: Built,
    task: Staged,
) -> Result<Packed> {
    let assembly = Assembly::new(stock, built.sections());
    let mut sizes = Sizes {
        unzipped: assembly.len() + task.index.bytes(),
        zip: lambda_zip::estimated_len(assembly.len(), &task.index),
        extracted: extracted_space(&built.manifest),
        ephemeral_storage_mb: options.ephemeral_storage_mb,
        task_budget: options.task_budget,
    };
    check_budgets(&budget::budgets(&sizes), options.force)?;
    let written = write_output(options, &launch.name, &assembly, task)?;
    let zip = match options.zip {
        Some(kind) => {
            let task_dir = written.task_dir.as_deref().map(|dir| (dir, &written.index));
            let (path, len) = lambda_zip::write_zip(&options.out, kind, &written.path, task_dir)?;
            sizes.zip = len;
            Some((path, kind, len))
        }
        None => None,
    };
    let budgets = budget::budgets(&sizes);
    let warnings = budgets
        .iter()
        .filter(|b| b.verdict != Verdict::Fits)
        .map(|b| b.to_string())
        .collect();
    let (id, payload_len) = (assembly.id, assembly.payload_len());
    Ok(Packed {
        path: written.path,
        walked: Vec::new(),
        manifest: built.manifest,
        task: written.index,
        task_dir: written.task_dir,
        saved_nanos: 0,
        id,
        arch,
        bootstrap_len: stock.len() as u64,
        payload_len,
        level: options.level,
        budgets,
        zip,
        warnings,
    })
}

/// What the tree takes in `/tmp`: nothing when the whole tree is in the deployment.
fn extracted_space(manifest: &Manifest) -> u64 {
    if manifest.is_direct() {
        0
    } else {
        Need::of(manifest).bytes
    }
}

fn check_budgets(budgets: &[Budget], force: bool) -> Result<()> {
    let over: Vec<String> = budgets
        .iter()
        .filter(|b| b.verdict == Verdict::OverHard)
        .map(|b| b.to_string())
        .collect();
    if !over.is_empty() && !force {
        bail!(
            "over Lambda's limits, nothing written (--force to write it anyway): {}",
            over.join("; ")
        );
    }
    Ok(())
}

/// The payload's sections, built.
struct Built {
    launch: Vec<u8>,
    manifest: Manifest,
    manifest_z: Vec<u8>,
    task_z: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

impl Built {
    fn sections(&self) -> Sections<'_> {
        Sections {
            flags: if self.manifest.is_direct() {
                payload::FLAG_DIRECT
            } else {
                0
            },
            launch: &self.launch,
            manifest: &self.manifest_z,
            task_index: &self.task_z,
            chunks: &self.frames,
        }
    }
}

/// Compresses the `/tmp` tree into chunks and encodes the manifest and task index.
fn build(
    launch: &Launch,
    split: &Split,
    index: &TaskIndex,
    level: i32,
    progress: &Progress,
) -> Result<Built> {
    let planned = compress::plan_chunks(&split.tree);
    let plan = Plan::new(
        split
            .tree
            .iter()
            .enumerate()
            .filter(|(_, e)| e.file_size() > 0)
            .map(|(i, e)| (i, e.file_size())),
        planned.iter().map(|c| c.data_len),
    );
    let total: u64 = planned.iter().map(|c| c.data_len).sum();
    let stage = progress.stage("compressing", total, true);
    let (chunks, frames) =
        compress::compress(&plan, planned, &split.sources, level, &|n| stage.inc(n))?;
    let task_z = deflate_section(&index.encode(), level)?;
    let raw = manifest::encode(&split.tree, &chunks, &sha256(&task_z));
    if raw.len() as u64 > MAX_MANIFEST {
        bail!(
            "the tree's {} entries in /tmp need a manifest of {}, over the bootstrap's limit of {}: --exclude what the runtime does not need, or raise --task-budget so that more stays in the deployment",
            split.tree.len(),
            mebibytes(raw.len() as u64),
            mebibytes(MAX_MANIFEST)
        );
    }
    let manifest_z = deflate_section(&raw, level)?;
    let manifest = Manifest::decode(raw).map_err(|e| anyhow!("the tree cannot be packed: {e}"))?;
    stage.finish(format!(
        "compressed {} into {} of {}",
        mebibytes(total),
        counted(frames.len(), "chunk", "chunks"),
        mebibytes(frames.iter().map(|f| f.len() as u64).sum())
    ));
    Ok(Built {
        launch: launch.encode(),
        manifest,
        manifest_z,
        task_z,
        frames,
    })
}

/// What `write_output` wrote.
struct Written {
    path: PathBuf,
    task_dir: Option<PathBuf>,
    index: TaskIndex,
}

/// Puts the task part in place, then the bootstrap, then removes the task parts of
/// earlier packs of the same name.
fn write_output(
    options: &PackOptions,
    name: &str,
    assembly: &Assembly,
    task: Staged,
) -> Result<Written> {
    let dir_name = task::dir_name(name, &assembly.id);
    let index = task.index.clone();
    let task_dir = if index.entries.is_empty() {
        None
    } else {
        Some(task.commit(&options.out, &dir_name)?)
    };
    let path = write_atomically(&options.out, "bootstrap", &assembly.parts())?;
    let stale = format!("coldpack-{name}.");
    for item in fs::read_dir(&options.out).into_iter().flatten().flatten() {
        let file_name = item.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(&stale) && file_name != dir_name {
            coldpack_bootstrap::cache::remove_tree(&item.path())
                .with_context(|| format!("cannot remove {}", item.path().display()))?;
        }
    }
    Ok(Written {
        path,
        task_dir,
        index,
    })
}

/// The lints of the walked tree: errors stop the pack unless `--force`; warnings come
/// back. Entries their owner cannot read or search stop it whatever `--force` says:
/// the bootstrap could neither check nor remove such a tree.
#[allow(clippy::too_many_arguments)]
fn lint(
    options: &PackOptions,
    arch: Arch,
    launch: &Launch,
    walked: &Walked,
    elf: &[Option<Elf>],
    stock: &[u8],
    entrypoint: usize,
) -> Result<Vec<String>> {
    if let Some(refusal) = lint::owner_locked(&walked.entries) {
        bail!("{refusal}");
    }
    let mut lints = Vec::new();
    match Elf::parse(stock) {
        Some(Elf { machine }) if machine == arch.elf_machine() => {}
        found => lints.push(Lint {
            error: true,
            message: format!(
                "the stock bootstrap{} is built for {}, but the function is {} (--arch): give --bootstrap built for it",
                options
                    .bootstrap
                    .as_ref()
                    .map(|p| format!(" {}", p.display()))
                    .unwrap_or_default(),
                found.map_or("no known machine".into(), |e| lint::machine_name(e.machine)),
                arch.as_str()
            ),
        }),
    }
    lints.extend(lint::lint_tree(
        &walked.entries,
        elf,
        arch,
        Some(entrypoint),
    ));
    let target = compat::Target {
        root: &options.dir,
        entrypoint: &walked.entries[entrypoint].path,
        env: &launch.env,
        runtime: options.runtime,
        arch,
    };
    let tree = compat::tree_from_walk(&walked.entries, &walked.sources, elf);
    let findings = compat::check(&tree, &target)?;
    if !findings.errors.is_empty() && !options.allow_incompatible {
        bail!("{}", findings.refusal(&target));
    }
    lints.extend(findings.into_warnings().into_iter().map(lint::warning));
    let errors: Vec<&Lint> = lints.iter().filter(|l| l.error).collect();
    if !errors.is_empty() && !options.force {
        let list: Vec<String> = errors.iter().map(|l| l.message.clone()).collect();
        bail!("{} (--force to write it anyway)", list.join("; "));
    }
    let mut warnings = walked.warnings.clone();
    warnings.extend(lints.into_iter().map(|l| l.message));
    Ok(warnings)
}

/// The launch section from the command line, refusing what the bootstrap would.
fn launch(args: &PackOptions) -> Result<Launch> {
    let name = match &args.name {
        Some(name) if valid_name(name) => name.clone(),
        Some(name) => bail!("--name {name:?} must be 1 to 64 characters of [A-Za-z0-9_-]"),
        None => default_name(&args.dir),
    };
    let env = args
        .env
        .iter()
        .map(|pair| {
            let bytes = pair.as_bytes();
            let split = bytes.iter().position(|&b| b == b'=');
            match split {
                Some(at) if valid_env_key(&bytes[..at]) && !bytes.contains(&0) => {
                    Ok((bytes[..at].to_vec(), bytes[at + 1..].to_vec()))
                }
                _ => Err(anyhow!(
                    "--env {:?} is not KEY=VALUE with a non-empty KEY",
                    pair.to_string_lossy()
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Launch {
        name,
        entrypoint: relative_entrypoint(&args.entrypoint)?,
        args: args.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env,
    })
}

/// DIR's own name with anything outside `[A-Za-z0-9_-]` made a `-`.
fn default_name(dir: &Path) -> String {
    let base = fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(OsString::from))
        .unwrap_or_default();
    let name: String = base
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "runtime".into()
    } else {
        name
    }
}

/// `--entrypoint` as a path inside DIR: relative, normal components, `./` allowed.
fn relative_entrypoint(entrypoint: &Path) -> Result<Vec<u8>> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in entrypoint.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => bail!(
                "--entrypoint {} must be a path inside DIR, like bin/python3 (no `/` at the start, no `..`)",
                entrypoint.display()
            ),
        }
    }
    if parts.is_empty() {
        bail!("--entrypoint is empty: name the executable inside DIR, like bin/python3");
    }
    Ok(parts.join(OsStr::new("/")).into_vec())
}

/// The file the entrypoint names, resolved through the tree's own links before the
/// walk (so a bad entrypoint is refused at once): it must be an executable regular
/// file inside DIR that is packed. Returns its path inside DIR.
fn entrypoint_target(options: &PackOptions, launch: &Launch, excludes: &Globs) -> Result<Vec<u8>> {
    let dir = &options.dir;
    let shown = options.dir.join(&options.entrypoint);
    let meta = fs::metadata(dir)
        .with_context(|| format!("cannot read runtime directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: give the runtime's root directory",
            dir.display()
        );
    }
    if excludes.matches_within(&launch.entrypoint) {
        bail!(
            "--entrypoint {} is left out by --exclude: the runtime needs it",
            options.entrypoint.display()
        );
    }
    let target = resolve(&launch.entrypoint, |path| resolve::on_disk(dir, path))
        .map_err(|why| anyhow!("entrypoint {}: {why}", shown.display()))?;
    if excludes.matches_within(&target) {
        bail!(
            "entrypoint {} resolves to {}, which --exclude leaves out",
            shown.display(),
            String::from_utf8_lossy(&target)
        );
    }
    let file = dir.join(OsStr::from_bytes(&target));
    let mode = fs::metadata(&file)
        .with_context(|| format!("cannot stat {}", file.display()))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        bail!(
            "entrypoint {} is not executable: chmod +x it before packing",
            shown.display()
        );
    }
    Ok(target)
}

/// OUT-DIR's path inside DIR, when it is inside, so the walk leaves it out.
fn output_inside(options: &PackOptions) -> Result<Option<Vec<u8>>> {
    match walk::inside(&options.dir, &options.out) {
        Some(path) if path.is_empty() => bail!(
            "-o {} is the runtime directory itself: write the output elsewhere",
            options.out.display()
        ),
        found => Ok(found),
    }
}

/// The bootstrap to prepend: the one built into coldpack for `arch`, or `--bootstrap`.
fn stock_bootstrap(over: Option<&Path>, arch: Arch) -> Result<Vec<u8>> {
    let Some(path) = over else {
        return Ok(stock::bootstrap(arch)?.to_vec());
    };
    let bytes =
        fs::read(path).with_context(|| format!("cannot read --bootstrap {}", path.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!("--bootstrap {} is not an ELF executable", path.display());
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if Trailer::read(&file, bytes.len() as u64, path)
        .ok()
        .flatten()
        .is_some()
    {
        bail!(
            "--bootstrap {} already carries a payload: give the stock bootstrap, not a packed one",
            path.display()
        );
    }
    Ok(bytes)
}

/// Writes `parts` to `dir/name` (mode 0755) through a temporary file in `dir`, so that
/// `dir/name` is either the old file or the complete new one.
fn write_atomically(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<PathBuf> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let target = dir.join(name);
    let temporary = dir.join(format!(".{name}.coldpack-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&temporary)?;
        for part in parts {
            file.write_all(part)?;
        }
        // Exactly 0755 whatever the umask: Lambda runs it as another user.
        file.set_permissions(fs::Permissions::from_mode(0o755))?;
        fs::rename(&temporary, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(anyhow!("cannot write {}: {e}", target.display()));
    }
    Ok(target)
}
