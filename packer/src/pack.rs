//! `coldpack pack`: from a runtime directory to `OUT-DIR/bootstrap`.
//!
//! Everything that can be refused is checked before OUT-DIR is touched (the tree, the
//! entrypoint, the arguments, the machine and its stock bootstrap); the output is
//! written to a temporary name in OUT-DIR and renamed over `bootstrap` only when
//! complete, so a failed pack leaves nothing half-written.
//!
//! Contents are cut into chunks (see [`chunk_lengths`]) of the data stream,
//! each compressed on its own (in parallel) so that the bootstrap can decode them on
//! every core; a chunk's zstd window never exceeds its size or 8 MiB, which bounds
//! the bootstrap's memory.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use coldpack_bootstrap::chunk::WINDOW_LOG_MAX;
use coldpack_bootstrap::manifest::{
    valid_env_key, valid_name, Chunk, Entry, EntryKind, Launch, Manifest,
};
use coldpack_bootstrap::parallel;
use coldpack_bootstrap::payload::{self, sha256, Header, Trailer, HEADER_LEN};
use sha2::{Digest, Sha256};

use crate::budget::{self, megabytes, Budget, Verdict};
use crate::cli::{Arch, PackArgs};
use crate::config::{self, PackOptions, ZipKind};
use crate::lambda_zip;
use crate::lint::{self, Elf, Lint};
use crate::progress::Progress;
use crate::stock;
use crate::walk::{walk, Excludes, Walked};

/// Chunk counts are multiples of this: the bootstrap decodes on 1, 2 or 3 threads
/// (its memory cap), and each then gets the same share of the chunks, so no core
/// finishes alone with the last one.
const CHUNK_SET: u64 = 6;
/// Data-stream bytes per chunk, at least and (on average) at most. Every chunk restarts zstd's
/// window, which costs ratio on trees of many similar files (on the benchmark's
/// `node_modules`-like tree at level 9: 3% with 8 MiB chunks, 0.5% with 32 MiB);
/// the decoder's window is capped at 8 MiB whatever the chunk size, so memory does
/// not grow with it.
const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 32 << 20;
/// What creating one file costs the bootstrap, in bytes decoded and written in the
/// same time: about 27 us against 2.4 ns per byte, measured on the benchmark's
/// corpora (ext4, 1 core). Chunks are cut to equal work, not equal bytes, so a chunk
/// of many small files is shorter than one of a few large ones.
const FILE_COST: u64 = 12 << 10;

pub fn cmd_pack(args: &PackArgs) -> Result<()> {
    let options = config::resolve(args)?;
    if let Some(path) = &options.config {
        eprintln!("coldpack: options from {}", path.display());
    }
    let packed = pack(&options, &Progress::for_stderr())?;
    for warning in &packed.warnings {
        eprintln!("coldpack: warning: {warning}");
    }
    eprintln!("{}", packed.summary());
    Ok(())
}

/// What `pack` wrote, for the summary.
pub struct Packed {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub id: [u8; 32],
    pub arch: Arch,
    pub bootstrap_len: u64,
    pub payload_len: u64,
    pub level: i32,
    pub budgets: Vec<Budget>,
    /// The zip written beside the bootstrap, its kind and size.
    pub zip: Option<(PathBuf, ZipKind, u64)>,
    pub warnings: Vec<String>,
}

impl Packed {
    pub fn file_len(&self) -> u64 {
        self.bootstrap_len + self.payload_len + payload::TRAILER_LEN as u64
    }

    pub fn summary(&self) -> String {
        let count =
            |f: fn(&EntryKind) -> bool| self.manifest.entries.iter().filter(|e| f(&e.kind)).count();
        let files = count(|k| matches!(k, EntryKind::File { .. }));
        let dirs = count(|k| matches!(k, EntryKind::Dir));
        let symlinks = count(|k| matches!(k, EntryKind::Symlink { .. }));
        let hardlinks = count(|k| matches!(k, EntryKind::Hardlink { .. }));
        let bytes_in: u64 = self.manifest.entries.iter().map(|e| e.file_size()).sum();
        let bytes_out: u64 = self.manifest.chunks.iter().map(|c| c.compressed_len).sum();
        let mut out = format!(
            "coldpack: packed {}\n\
             \x20 entries   {files} files, {dirs} directories, {symlinks} symlinks, {hardlinks} hardlinks\n\
             \x20 bytes     {bytes_in} in ({}) -> {bytes_out} out ({}), {:.1}% of the input, {} chunks at zstd level {}\n\
             \x20 bootstrap {} bytes: stock bootstrap for {} {} + payload {}\n",
            self.path.display(),
            megabytes(bytes_in),
            megabytes(bytes_out),
            100.0 * bytes_out as f64 / bytes_in.max(1) as f64,
            self.manifest.chunks.len(),
            self.level,
            self.file_len(),
            self.arch.as_str(),
            self.bootstrap_len,
            self.payload_len,
        );
        if let Some((path, kind, len)) = &self.zip {
            let place = match kind {
                ZipKind::Function => "/var/task/bootstrap",
                ZipKind::Layer => "/opt/bootstrap",
            };
            out.push_str(&format!(
                "  zip       {} ({len} bytes): bootstrap mode 0755, stored, for {place}\n",
                path.display()
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

pub fn pack(options: &PackOptions, progress: &Progress) -> Result<Packed> {
    let launch = launch(options)?;
    let excludes = Excludes::new(&options.exclude)?;
    if excludes.excludes_within(&launch.entrypoint) {
        bail!(
            "--entrypoint {} is left out by --exclude: the runtime needs it",
            options.entrypoint.display()
        );
    }
    let inside = check_entrypoint(&options.dir, &options.entrypoint, &excludes)?;
    let stage = progress.stage("walking", 0, false);
    let Walked {
        entries,
        sources,
        warnings: walk_warnings,
    } = walk(&options.dir, &excludes)?;
    stage.finish(format!(
        "walked {} entries in {}",
        entries.len(),
        options.dir.display()
    ));
    let entrypoint = entries
        .binary_search_by(|e| e.path.as_slice().cmp(&inside))
        .ok()
        .map(|i| match entries[i].kind {
            EntryKind::Hardlink { target } => target as usize,
            _ => i,
        });

    let total: u64 = entries.iter().map(|e| e.file_size()).sum();
    let elf = read_headers(&entries, &sources)?;
    let arch = stock::choose_arch(options.arch, &elf, |i| {
        String::from_utf8_lossy(&entries[i].path).into_owned()
    })?;
    let stock = stock_bootstrap(options.bootstrap.as_deref(), arch)?;

    let mut lints = Vec::new();
    match Elf::parse(&stock) {
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
    lints.extend(lint::lint_tree(&entries, &elf, arch, entrypoint));
    let errors: Vec<&Lint> = lints.iter().filter(|l| l.error).collect();
    if !errors.is_empty() && !options.force {
        let list: Vec<String> = errors.iter().map(|l| l.message.clone()).collect();
        bail!("{} (--force to write it anyway)", list.join("; "));
    }

    let sizes: Vec<u64> = entries
        .iter()
        .map(|e| e.file_size())
        .filter(|&size| size > 0)
        .collect();
    let mut manifest = Manifest {
        entries,
        chunks: chunk_lengths(&sizes)
            .into_iter()
            .map(|data_len| Chunk {
                data_len,
                compressed_len: 0,
                sha256: [0; 32],
                data_sha256: [0; 32],
            })
            .collect(),
    };
    let stage = progress.stage("compressing", total, true);
    let frames = compress_chunks(&manifest, &sources, options.level, &|n| stage.inc(n))?;
    for (chunk, (frame, data_sha256)) in manifest.chunks.iter_mut().zip(&frames) {
        chunk.compressed_len = frame.len() as u64;
        chunk.sha256 = sha256(frame);
        chunk.data_sha256 = *data_sha256;
    }

    let launch_bytes = launch.encode();
    let manifest_bytes = payload::deflate_manifest(&manifest.encode(), options.level)?;
    let chunks_len: u64 = frames.iter().map(|(f, _)| f.len() as u64).sum();
    stage.finish(format!(
        "compressed {} into {} chunks of {}",
        megabytes(total),
        frames.len(),
        megabytes(chunks_len)
    ));
    let header = Header {
        launch_len: launch_bytes.len() as u64,
        manifest_len: manifest_bytes.len() as u64,
        chunks_len,
        launch_sha256: sha256(&launch_bytes),
        manifest_sha256: sha256(&manifest_bytes),
    }
    .encode();
    let payload_len = (HEADER_LEN + launch_bytes.len() + manifest_bytes.len()) as u64 + chunks_len;
    let id = sha256(&header);
    let trailer = Trailer {
        offset: stock.len() as u64,
        len: payload_len,
        header_sha256: id,
    }
    .encode();

    let file_len = stock.len() as u64 + payload_len + trailer.len() as u64;
    let budgets = budget::budgets(
        file_len,
        lambda_zip::estimated_len(file_len),
        budget::extracted_size(&manifest.entries),
        options.ephemeral_storage_mb,
    );
    let over: Vec<String> = budgets
        .iter()
        .filter(|b| b.verdict == Verdict::OverHard)
        .map(|b| b.to_string())
        .collect();
    if !over.is_empty() && !options.force {
        bail!(
            "over Lambda's limits, nothing written (--force to write it anyway): {}",
            over.join("; ")
        );
    }

    let mut parts: Vec<&[u8]> = vec![&stock, &header, &launch_bytes, &manifest_bytes];
    parts.extend(frames.iter().map(|(frame, _)| frame.as_slice()));
    parts.push(&trailer);
    let path = write_atomically(&options.out, "bootstrap", &parts)?;
    let mut budgets = budgets;
    let zip = match options.zip {
        Some(kind) => {
            let (zip_path, zip_len) = lambda_zip::write_zip(&options.out, kind, &path)?;
            // The zip's real size replaces the estimate.
            budgets = budget::budgets(
                file_len,
                zip_len,
                budget::extracted_size(&manifest.entries),
                options.ephemeral_storage_mb,
            );
            Some((zip_path, kind, zip_len))
        }
        None => None,
    };
    let mut warnings = walk_warnings;
    warnings.extend(lints.iter().map(|l| l.message.clone()));
    warnings.extend(
        budgets
            .iter()
            .filter(|b| b.verdict != Verdict::Fits)
            .map(|b| b.to_string()),
    );
    Ok(Packed {
        path,
        manifest,
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

/// The entrypoint must resolve, through any links, to an executable file inside DIR
/// that is packed; returns that file's path inside DIR.
fn check_entrypoint(dir: &Path, entrypoint: &Path, excludes: &Excludes) -> Result<Vec<u8>> {
    let path = dir.join(entrypoint);
    let root = fs::canonicalize(dir)
        .with_context(|| format!("cannot read runtime directory {}", dir.display()))?;
    let resolved = fs::canonicalize(&path).map_err(|e| {
        anyhow!(
            "entrypoint {} does not exist ({e}): --entrypoint is a path inside DIR",
            path.display()
        )
    })?;
    let Ok(inside) = resolved.strip_prefix(&root) else {
        bail!(
            "entrypoint {} resolves to {}, outside {}: the runtime must carry its own executable",
            path.display(),
            resolved.display(),
            dir.display()
        );
    };
    let inside = inside.as_os_str().as_bytes();
    if excludes.excludes_within(inside) {
        bail!(
            "entrypoint {} resolves to {}, which --exclude leaves out",
            path.display(),
            resolved.display()
        );
    }
    let meta =
        fs::metadata(&resolved).with_context(|| format!("cannot stat {}", resolved.display()))?;
    if !meta.is_file() {
        bail!("entrypoint {} is not a regular file", path.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "entrypoint {} is not executable: chmod +x it before packing",
            path.display()
        );
    }
    Ok(inside.to_vec())
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

/// What each file's first bytes say about it as an ELF, read on all cores. This is
/// also where unreadable files are found, all of them, before anything is written.
fn read_headers(entries: &[Entry], sources: &[PathBuf]) -> Result<Vec<Option<Elf>>> {
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i].kind, EntryKind::File { .. }))
        .collect();
    let headers = parallel_map(files.len(), |job| {
        let source = &sources[files[job]];
        let read = || -> std::io::Result<Option<Elf>> {
            let mut head = Vec::with_capacity(64);
            File::open(source)?.take(64).read_to_end(&mut head)?;
            Ok(Elf::parse(&head))
        };
        Ok(read().map_err(|e| format!("{} ({e})", source.display())))
    })?;
    let unreadable: Vec<&String> = headers.iter().filter_map(|h| h.as_ref().err()).collect();
    if !unreadable.is_empty() {
        let shown: Vec<&str> = unreadable.iter().take(10).map(|s| s.as_str()).collect();
        bail!(
            "cannot read {} files, so they cannot be packed: {}{}; make them readable or --exclude them",
            unreadable.len(),
            shown.join(", "),
            if unreadable.len() > 10 { ", ..." } else { "" }
        );
    }
    let mut elf = vec![None; entries.len()];
    for (&index, header) in files.iter().zip(headers) {
        elf[index] = header.map_err(|e| anyhow!(e))?;
    }
    Ok(elf)
}

/// Cuts the data stream, the contents of files of these `sizes` in order, into
/// chunks of equal work ([`FILE_COST`]), as many as [`CHUNK_SET`] and [`MAX_CHUNK`]
/// ask for, or fewer of at least [`MIN_CHUNK`] for a small tree.
fn chunk_lengths(sizes: &[u64]) -> Vec<u64> {
    let total: u64 = sizes.iter().sum();
    let count = if total < CHUNK_SET * MIN_CHUNK {
        total.div_ceil(MIN_CHUNK)
    } else {
        CHUNK_SET * total.div_ceil(CHUNK_SET * MAX_CHUNK)
    };
    let work = u128::from(total) + u128::from(FILE_COST) * sizes.len() as u128;
    let boundary = |n: u64| work * u128::from(n) / u128::from(count.max(1));
    let mut cuts = vec![0];
    let (mut done_work, mut done_bytes, mut next) = (0u128, 0u64, 1);
    for &size in sizes {
        let content_at = done_work + u128::from(FILE_COST);
        let end = content_at + u128::from(size);
        while next < count && boundary(next) < end {
            let into = boundary(next).saturating_sub(content_at) as u64;
            cuts.push(done_bytes + into);
            next += 1;
        }
        (done_work, done_bytes) = (end, done_bytes + size);
    }
    cuts.push(total);
    cuts.dedup();
    cuts.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Each chunk's tar stream, zstd-compressed, and the SHA-256 of the file contents it
/// carries, built on all cores.
fn compress_chunks(
    manifest: &Manifest,
    sources: &[PathBuf],
    level: i32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(Vec<u8>, [u8; 32])>> {
    let plan = manifest.plan();
    parallel_map(plan.len(), |index| {
        let mut builder = tar::Builder::new(Vec::new());
        let mut data_hasher = Sha256::new();
        for piece in &plan[index] {
            let entry = &manifest.entries[piece.entry];
            let source = &sources[piece.entry];
            let mut data = vec![0; piece.len as usize];
            File::open(source)
                .and_then(|file| file.read_exact_at(&mut data, piece.offset))
                .with_context(|| {
                    format!(
                        "cannot read {} (did it change while packing?)",
                        source.display()
                    )
                })?;
            data_hasher.update(&data);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(piece.len);
            header.set_mode(entry.mode);
            header.set_mtime(entry.mtime.sec.max(0) as u64);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(
                &mut header,
                Path::new(OsStr::from_bytes(&entry.path)),
                data.as_slice(),
            )?;
        }
        let tar = builder.into_inner()?;
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        // Levels 20-22 ask for windows past 8 MiB, which the bootstrap refuses.
        compressor.set_parameter(zstd::zstd_safe::CParameter::WindowLog(WINDOW_LOG_MAX))?;
        let frame = compressor.compress(&tar)?;
        progress(manifest.chunks[index].data_len);
        Ok((frame, data_hasher.finalize().into()))
    })
}

/// Runs `job(i)` for `i` in `0..count` on all cores, keeping results in order.
fn parallel_map<T: Send>(count: usize, job: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let results: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let threads = parallel::threads_for(count, usize::MAX);
    parallel::run(
        count,
        threads,
        || (),
        |i, ()| {
            let value = job(i)?;
            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            anyhow::Ok(())
        },
    )?;
    Ok(results
        .into_iter()
        .filter_map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stream_in_sets_of_equal_work() {
        // Many small files then one large one: the small files' chunks are shorter.
        let mut sizes = vec![4 << 10; 20_000];
        sizes.push(200 << 20);
        let lengths = chunk_lengths(&sizes);
        assert_eq!(lengths.len() as u64 % CHUNK_SET, 0, "{lengths:?}");
        assert_eq!(lengths.iter().sum::<u64>(), sizes.iter().sum::<u64>());
        assert!(lengths.iter().all(|&l| l > 0));
        assert!(lengths[0] < *lengths.last().unwrap() / 2, "{lengths:?}");
        let work = |range: std::ops::Range<u64>| {
            let mut at = 0;
            sizes
                .iter()
                .map(|&size| {
                    let (start, end) = (at, at + size);
                    at = end;
                    let inside = end.min(range.end).saturating_sub(start.max(range.start));
                    inside + if range.contains(&start) { FILE_COST } else { 0 }
                })
                .sum::<u64>()
        };
        let mut at = 0;
        let shares: Vec<u64> = lengths
            .iter()
            .map(|&l| {
                at += l;
                work(at - l..at)
            })
            .collect();
        let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
        assert!(hi - lo <= FILE_COST + (4 << 10), "{shares:?}");
    }

    #[test]
    fn small_and_empty_streams() {
        assert!(chunk_lengths(&[]).is_empty());
        assert_eq!(chunk_lengths(&[1]), vec![1]);
        // One file is split at byte offsets: three ways under 6 MiB, six ways above.
        for (size, count) in [(3 << 20, 3), (60 << 20, 6)] {
            let lengths = chunk_lengths(&[size]);
            assert_eq!(lengths.len(), count);
            assert_eq!(lengths.iter().sum::<u64>(), size);
            let share = size / count as u64;
            assert!(
                lengths.iter().all(|&l| l.abs_diff(share) <= FILE_COST),
                "{lengths:?}"
            );
        }
    }
}
