//! `coldpack inspect` and `coldpack verify`: read a packed bootstrap back, with the
//! same reader the bootstrap uses, so what they report is what Lambda will see.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coldpack_bootstrap::chunk::{self, Decoder, Sink};
use coldpack_bootstrap::launch::Launch;
use coldpack_bootstrap::manifest::{Entry, Kind, Manifest, Piece};
use coldpack_bootstrap::payload::{hex, Payload, FORMAT_VERSION};
use coldpack_bootstrap::task::{self, TaskIndex};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::budget::counted;
use crate::cli::InspectArgs;
use crate::task_part;
use crate::work;
use crate::{lint, out};

/// A packed bootstrap, read back.
struct Opened {
    payload: Payload,
    launch: Launch,
    manifest: Manifest,
    task: TaskIndex,
    task_dir: PathBuf,
}

/// A packed bootstrap named directly or by the directory that holds it.
fn open(target: &Path) -> Result<Opened> {
    let path: PathBuf = if target.is_dir() {
        target.join("bootstrap")
    } else {
        target.to_owned()
    };
    let payload = Payload::open(&path)?;
    let launch = payload.launch()?;
    let manifest = payload.manifest()?;
    let task = payload.task_index(&manifest)?;
    let task_dir = task::locate(&path, &launch.name, &payload.id);
    Ok(Opened {
        payload,
        launch,
        manifest,
        task,
        task_dir,
    })
}

/// What `inspect` reports, as JSON.
fn summary(opened: &Opened) -> serde_json::Value {
    let Opened {
        payload,
        launch,
        manifest,
        task,
        task_dir,
    } = opened;
    let count = |kinds: &[Kind]| {
        (0..manifest.len())
            .filter(|&i| kinds.contains(&manifest.kind(i)))
            .count()
    };
    let entries: Vec<Entry> = manifest.entries();
    let extracted_bytes: u64 = entries.iter().map(Entry::file_size).sum();
    let links = task_part::links(manifest).count();
    // The links into the task part are counted apart, as the pack's summary does.
    let extracted = if manifest.is_direct() {
        0
    } else {
        manifest.len() - links
    };
    let reached = reached(manifest, task);
    json!({
        "path": payload.path().display().to_string(),
        "format_version": FORMAT_VERSION,
        "payload_sha256": hex(&payload.id),
        "name": launch.name,
        "entrypoint": lint::text(&launch.entrypoint),
        "args": launch.args.iter().map(|a| lint::text(a)).collect::<Vec<_>>(),
        "env": launch.env.iter().map(|(k, v)| format!("{}={}", lint::text(k), lint::text(v))).collect::<Vec<_>>(),
        "entries": {
            "files": count(&[Kind::File]),
            "directories": count(&[Kind::Dir]),
            "symlinks": count(&[Kind::Symlink]),
            "hardlinks": count(&[Kind::Hardlink]),
            "task_links": links,
        },
        "direct": manifest.is_direct(),
        "extract": { "entries": extracted, "bytes": extracted_bytes },
        "task_part": {
            "dir": task_dir.display().to_string(),
            "entries": task.entries.len(),
            "files": task.files(),
            "bytes": task.bytes(),
        },
        "work_saved_ms": work::nanos(reached.0, reached.1) / 1_000_000,
        "file_bytes": extracted_bytes,
        "compressed_bytes": manifest.chunks.iter().map(|c| c.compressed_len).sum::<u64>(),
        "chunks": manifest.chunks.len(),
        "bootstrap_bytes": payload.offset,
        "payload_bytes": payload.byte_len(),
    })
}

/// The entries and bytes a cold start need not write: each link of the `/tmp` tree
/// into the task part, with what the task part holds below it. The rest of the task
/// part are the directories above those, and copies of small files that are
/// extracted as well (see `split`).
fn reached(manifest: &Manifest, task: &TaskIndex) -> (u64, u64) {
    let links: HashSet<Vec<u8>> = task_part::links(manifest)
        .map(|i| manifest.path(i))
        .collect();
    let under_link = |path: &[u8]| {
        links.contains(&b""[..])
            || (0..path.len()).any(|at| path[at] == b'/' && links.contains(&path[..at]))
    };
    let (mut entries, mut bytes) = (links.len() as u64, 0);
    for entry in &task.entries {
        if under_link(&entry.path) {
            entries += 1;
            bytes += entry.size;
        } else if links.contains(&entry.path) {
            bytes += entry.size;
        }
    }
    (entries, bytes)
}

pub fn cmd_inspect(args: &InspectArgs) -> Result<()> {
    let opened = open(&args.target)?;
    let summary = summary(&opened);
    if args.json {
        out!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    print_summary(&opened, &summary)
}

/// `inspect`'s text: the launch section, then the split and the sizes.
fn print_summary(opened: &Opened, summary: &serde_json::Value) -> Result<()> {
    let Opened {
        payload, launch, ..
    } = opened;
    out!("{}", payload.path().display());
    out!("  name        {}", launch.name);
    out!("  entrypoint  {}", lint::text(&launch.entrypoint));
    for arg in &launch.args {
        out!("  arg         {}", lint::text(arg));
    }
    for (key, value) in &launch.env {
        out!("  env         {}={}", lint::text(key), lint::text(value));
    }
    out!(
        "  payload     sha256 {} (format {FORMAT_VERSION})",
        hex(&payload.id)
    );
    let n = |value: &serde_json::Value| value.as_u64().unwrap_or(0) as usize;
    let (e, t, x) = (
        &summary["entries"],
        &summary["task_part"],
        &summary["extract"],
    );
    if n(&t["entries"]) == 0 {
        out!("  kept        nothing in the deployment");
    } else {
        out!(
            "  kept        {} ({}, {} bytes) in the deployment, {}: about {} ms less per cold start",
            counted(n(&t["entries"]), "entry", "entries"),
            counted(n(&t["files"]), "file", "files"),
            t["bytes"],
            t["dir"].as_str().unwrap_or(""),
            summary["work_saved_ms"]
        );
    }
    if opened.manifest.is_direct() {
        out!("  extract     nothing: the whole tree is in the deployment");
    } else {
        out!(
            "  extract     {}, {} bytes: {}, {}, {}, {}, {} into the deployment",
            counted(n(&x["entries"]), "entry", "entries"),
            x["bytes"],
            counted(n(&e["files"]), "file", "files"),
            counted(n(&e["directories"]), "directory", "directories"),
            counted(n(&e["symlinks"]), "symlink", "symlinks"),
            counted(n(&e["hardlinks"]), "hardlink", "hardlinks"),
            counted(n(&e["task_links"]), "link", "links"),
        );
    }
    out!(
        "  contents    {} compressed in {}",
        summary["compressed_bytes"],
        counted(n(&summary["chunks"]), "chunk", "chunks")
    );
    out!(
        "  file        bootstrap {} bytes + payload {} bytes",
        payload.offset,
        payload.byte_len()
    );
    Ok(())
}

pub fn cmd_verify(args: &InspectArgs) -> Result<()> {
    let opened = open(&args.target)?;
    let mut bad = verify_contents(&opened.payload, &opened.manifest)?;
    bad.extend(task_part::check(&opened.task_dir, &opened.task));
    let Opened {
        payload,
        manifest,
        task,
        ..
    } = &opened;
    let verdict = json!({
        "path": payload.path().display().to_string(),
        "payload_sha256": hex(&payload.id),
        "ok": bad.is_empty(),
        "entries": manifest.len(),
        "chunks": manifest.chunks.len(),
        "task_part_entries": task.entries.len(),
        "mismatches": bad,
    });
    if args.json {
        out!("{}", serde_json::to_string_pretty(&verdict)?);
    } else if bad.is_empty() {
        out!(
            "ok: {} entries, {} chunks, {} kept in the deployment, every hash matches (payload {})",
            manifest.len(),
            manifest.chunks.len(),
            task.entries.len(),
            hex(&payload.id)
        );
    }
    if !bad.is_empty() {
        bail!(
            "{} mismatches: {}; pack again, and deploy all of the output",
            bad.len(),
            bad.join(", ")
        );
    }
    Ok(())
}

/// Hashes what a chunk carries.
struct Hashing(Sha256);

impl Sink for Hashing {
    fn begin(&mut self, _: &Piece) -> coldpack_bootstrap::error::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &Piece, bytes: &[u8]) -> coldpack_bootstrap::error::Result<()> {
        self.0.update(bytes);
        Ok(())
    }
    fn end(&mut self, _: &Piece) -> coldpack_bootstrap::error::Result<()> {
        Ok(())
    }
}

/// Decodes every chunk (checking its hash and its length against the manifest) and
/// hashes the file contents it carries; returns the chunks whose contents differ
/// from the SHA-256 the manifest records, by the files they span.
fn verify_contents(payload: &Payload, manifest: &Manifest) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    let mut decoder = Decoder::new()?;
    let starts = manifest.chunk_starts();
    let plan = manifest.plan();
    for (index, start) in starts.iter().enumerate() {
        let pieces = plan.chunk(index);
        let mut hashing = Hashing(Sha256::new());
        chunk::read_pieces(
            payload,
            manifest,
            index,
            *start,
            pieces,
            &mut decoder,
            &mut hashing,
        )?;
        if <[u8; 32]>::from(hashing.0.finalize()) != manifest.chunks[index].data_sha256 {
            let path =
                |piece: Option<&Piece>| piece.map_or_else(String::new, |p| manifest.shown(p.entry));
            bad.push(format!(
                "chunk {index} ({} to {})",
                path(pieces.first()),
                path(pieces.last())
            ));
        }
    }
    Ok(bad)
}
