//! `coldpack inspect` and `coldpack verify`: read a packed bootstrap back, with the
//! same reader the bootstrap uses, so what they report is what Lambda will see.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coldpack_bootstrap::chunk::{self, ChunkError};
use coldpack_bootstrap::manifest::{EntryKind, Launch, Manifest, Piece};
use coldpack_bootstrap::payload::{hex, Payload, FORMAT_VERSION};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::InspectArgs;

/// A packed bootstrap named directly or by the directory that holds it.
fn open(target: &Path) -> Result<(Payload, Launch, Manifest)> {
    let path: PathBuf = if target.is_dir() {
        target.join("bootstrap")
    } else {
        target.to_owned()
    };
    let payload = Payload::open(&path)?;
    let launch = payload.launch()?;
    let manifest = payload.manifest()?;
    Ok((payload, launch, manifest))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn cmd_inspect(args: &InspectArgs) -> Result<()> {
    let (payload, launch, manifest) = open(&args.target)?;
    let count = |f: fn(&EntryKind) -> bool| manifest.entries.iter().filter(|e| f(&e.kind)).count();
    let file_bytes: u64 = manifest.entries.iter().map(|e| e.file_size()).sum();
    let compressed: u64 = manifest.chunks.iter().map(|c| c.compressed_len).sum();
    let summary = json!({
        "path": payload.path().display().to_string(),
        "format_version": FORMAT_VERSION,
        "payload_sha256": hex(&payload.id),
        "name": launch.name,
        "entrypoint": lossy(&launch.entrypoint),
        "args": launch.args.iter().map(|a| lossy(a)).collect::<Vec<_>>(),
        "env": launch.env.iter().map(|(k, v)| format!("{}={}", lossy(k), lossy(v))).collect::<Vec<_>>(),
        "entries": {
            "files": count(|k| matches!(k, EntryKind::File { .. })),
            "directories": count(|k| matches!(k, EntryKind::Dir)),
            "symlinks": count(|k| matches!(k, EntryKind::Symlink { .. })),
            "hardlinks": count(|k| matches!(k, EntryKind::Hardlink { .. })),
        },
        "file_bytes": file_bytes,
        "compressed_bytes": compressed,
        "chunks": manifest.chunks.len(),
        "bootstrap_bytes": payload.offset,
        "payload_bytes": payload.byte_len(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("{}", payload.path().display());
    println!("  name        {}", launch.name);
    println!("  entrypoint  {}", lossy(&launch.entrypoint));
    for arg in &launch.args {
        println!("  arg         {}", lossy(arg));
    }
    for (key, value) in &launch.env {
        println!("  env         {}={}", lossy(key), lossy(value));
    }
    println!(
        "  payload     sha256 {} (format {FORMAT_VERSION})",
        hex(&payload.id)
    );
    let entries = &summary["entries"];
    println!(
        "  entries     {} files, {} directories, {} symlinks, {} hardlinks",
        entries["files"], entries["directories"], entries["symlinks"], entries["hardlinks"]
    );
    println!(
        "  contents    {file_bytes} bytes, {compressed} compressed in {} chunks",
        manifest.chunks.len()
    );
    println!(
        "  file        bootstrap {} bytes + payload {} bytes",
        payload.offset,
        payload.byte_len()
    );
    Ok(())
}

pub fn cmd_verify(args: &InspectArgs) -> Result<()> {
    let (payload, _launch, manifest) = open(&args.target)?;
    let bad = verify_contents(&payload, &manifest)?;
    let verdict = json!({
        "path": payload.path().display().to_string(),
        "payload_sha256": hex(&payload.id),
        "ok": bad.is_empty(),
        "entries": manifest.entries.len(),
        "chunks": manifest.chunks.len(),
        "mismatches": bad,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else if bad.is_empty() {
        println!(
            "ok: {} entries, {} chunks, every hash matches (payload {})",
            manifest.entries.len(),
            manifest.chunks.len(),
            hex(&payload.id)
        );
    }
    if !bad.is_empty() {
        bail!(
            "contents do not match their SHA-256 in {} of {} chunks: {}; pack again",
            bad.len(),
            manifest.chunks.len(),
            bad.join(", ")
        );
    }
    Ok(())
}

/// Decodes every chunk (checking its hash and its archive against the manifest) and
/// hashes the file contents it carries; returns the chunks whose contents differ
/// from the SHA-256 the manifest records, by the files they span.
fn verify_contents(payload: &Payload, manifest: &Manifest) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    let mut buffer = vec![0; 256 * 1024];
    let starts = manifest.chunk_starts();
    for (index, pieces) in manifest.plan().iter().enumerate() {
        let mut hasher = Sha256::new();
        chunk::read_pieces(
            payload,
            manifest,
            index,
            starts[index],
            pieces,
            |_, _, member| loop {
                let n = member.read(&mut buffer).map_err(ChunkError::Read)?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buffer[..n]);
            },
        )?;
        if <[u8; 32]>::from(hasher.finalize()) != manifest.chunks[index].data_sha256 {
            let path = |piece: Option<&Piece>| {
                piece.map_or_else(String::new, |p| lossy(&manifest.entries[p.entry].path))
            };
            bad.push(format!(
                "chunk {index} ({} to {})",
                path(pieces.first()),
                path(pieces.last())
            ));
        }
    }
    Ok(bad)
}
