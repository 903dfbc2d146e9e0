//! `coldpack pack`: from a runtime directory to `OUT-DIR/bootstrap`.
//!
//! Everything that can be refused is checked before OUT-DIR is touched (the tree, the
//! entrypoint, the arguments, the stock bootstrap); the output is written to a
//! temporary name in OUT-DIR and renamed over `bootstrap` only when complete, so a
//! failed pack leaves nothing half-written.
//!
//! Contents are cut into chunks of about [`CHUNK_TARGET`] bytes of the data stream,
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
use coldpack_bootstrap::manifest::{valid_env_key, valid_name, Chunk, EntryKind, Launch, Manifest};
use coldpack_bootstrap::parallel;
use coldpack_bootstrap::payload::{self, sha256, Header, Trailer, HEADER_LEN};
use sha2::{Digest, Sha256};

use crate::cli::PackArgs;
use crate::walk::{walk, Walked};

/// Data-stream bytes per chunk. Big enough that compression loses little at chunk
/// starts; small enough that a tree of a few dozen MB still spreads over the cores
/// and that a decoder's window stays at 8 MiB.
pub const CHUNK_TARGET: u64 = 8 << 20;

pub fn cmd_pack(args: &PackArgs) -> Result<()> {
    let packed = pack(args)?;
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
    pub bootstrap_len: u64,
    pub payload_len: u64,
    pub warnings: Vec<String>,
}

impl Packed {
    pub fn summary(&self) -> String {
        let count =
            |f: fn(&EntryKind) -> bool| self.manifest.entries.iter().filter(|e| f(&e.kind)).count();
        let files = count(|k| matches!(k, EntryKind::File { .. }));
        let dirs = count(|k| matches!(k, EntryKind::Dir));
        let symlinks = count(|k| matches!(k, EntryKind::Symlink { .. }));
        let hardlinks = count(|k| matches!(k, EntryKind::Hardlink { .. }));
        let bytes_in: u64 = self.manifest.entries.iter().map(|e| e.file_size()).sum();
        let bytes_out: u64 = self.manifest.chunks.iter().map(|c| c.compressed_len).sum();
        format!(
            "coldpack: packed {files} files, {dirs} directories, {symlinks} symlinks, {hardlinks} hardlinks; \
             {bytes_in} bytes -> {bytes_out} in {} chunks ({:.1}%); payload {}\n\
             coldpack: wrote {} ({} bytes: bootstrap {} + payload {})",
            self.manifest.chunks.len(),
            100.0 * bytes_out as f64 / bytes_in.max(1) as f64,
            payload::hex(&self.id),
            self.path.display(),
            self.bootstrap_len + self.payload_len + payload::TRAILER_LEN as u64,
            self.bootstrap_len,
            self.payload_len,
        )
    }
}

pub fn pack(args: &PackArgs) -> Result<Packed> {
    let launch = launch(args)?;
    let Walked {
        mut entries,
        sources,
        warnings,
    } = walk(&args.dir)?;
    check_entrypoint(&args.dir, &args.entrypoint)?;
    let stock = stock_bootstrap(args.bootstrap.as_deref())?;

    hash_files(&mut entries, &sources)?;
    let total: u64 = entries.iter().map(|e| e.file_size()).sum();
    let mut manifest = Manifest {
        entries,
        chunks: chunk_lengths(total)
            .map(|data_len| Chunk {
                data_len,
                compressed_len: 0,
                sha256: [0; 32],
            })
            .collect(),
    };
    let frames = compress_chunks(&manifest, &sources, args.level)?;
    for (chunk, frame) in manifest.chunks.iter_mut().zip(&frames) {
        chunk.compressed_len = frame.len() as u64;
        chunk.sha256 = sha256(frame);
    }

    let launch_bytes = launch.encode();
    let manifest_bytes = manifest.encode();
    let chunks_len: u64 = frames.iter().map(|f| f.len() as u64).sum();
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

    let mut parts: Vec<&[u8]> = vec![&stock, &header, &launch_bytes, &manifest_bytes];
    parts.extend(frames.iter().map(Vec::as_slice));
    parts.push(&trailer);
    let path = write_atomically(&args.out, "bootstrap", &parts)?;
    Ok(Packed {
        path,
        manifest,
        id,
        bootstrap_len: stock.len() as u64,
        payload_len,
        warnings,
    })
}

/// The launch section from the command line, refusing what the bootstrap would.
fn launch(args: &PackArgs) -> Result<Launch> {
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

/// The entrypoint must resolve, through any links, to an executable file inside DIR.
fn check_entrypoint(dir: &Path, entrypoint: &Path) -> Result<()> {
    let path = dir.join(entrypoint);
    let root =
        fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let resolved = fs::canonicalize(&path).map_err(|e| {
        anyhow!(
            "entrypoint {} does not exist ({e}): --entrypoint is a path inside DIR",
            path.display()
        )
    })?;
    if !resolved.starts_with(&root) {
        bail!(
            "entrypoint {} resolves to {}, outside {}: the runtime must carry its own executable",
            path.display(),
            resolved.display(),
            dir.display()
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
    Ok(())
}

/// The bootstrap to prepend: the one built into coldpack, or `--bootstrap`.
fn stock_bootstrap(over: Option<&Path>) -> Result<Vec<u8>> {
    let Some(path) = over else {
        return Ok(crate::STOCK_BOOTSTRAP.to_vec());
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

/// Fills in every file's SHA-256, reading files on all cores. This is also where an
/// unreadable file is found, before anything is written.
fn hash_files(
    entries: &mut [coldpack_bootstrap::manifest::Entry],
    sources: &[PathBuf],
) -> Result<()> {
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i].kind, EntryKind::File { .. }))
        .collect();
    let hashes = parallel_map(files.len(), |job| {
        let source = &sources[files[job]];
        let mut file =
            File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", source.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(<[u8; 32]>::from(hasher.finalize()))
    })?;
    for (&index, hash) in files.iter().zip(hashes) {
        if let EntryKind::File { sha256, .. } = &mut entries[index].kind {
            *sha256 = hash;
        }
    }
    Ok(())
}

/// Cuts `total` bytes into equal chunks of at most about [`CHUNK_TARGET`].
fn chunk_lengths(total: u64) -> impl Iterator<Item = u64> {
    let count = total.div_ceil(CHUNK_TARGET);
    (0..count).map(move |i| total / count + u64::from(i < total % count))
}

/// Each chunk's tar stream, zstd-compressed, built on all cores.
fn compress_chunks(manifest: &Manifest, sources: &[PathBuf], level: i32) -> Result<Vec<Vec<u8>>> {
    let plan = manifest.plan();
    parallel_map(plan.len(), |index| {
        let mut builder = tar::Builder::new(Vec::new());
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
        Ok(compressor.compress(&tar)?)
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
