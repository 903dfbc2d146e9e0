//! A whole payload, with hashes made to match, so that the fuzzer explores what lies
//! behind them (the manifest's rules, the zstd frames checked against the plan, the
//! extraction, the warm check) instead of bouncing off the first SHA-256. The payload
//! is laid out by the format's own `Assembly`, as the packer does.
//!
//! Input: `[u8 flags][u16 launch_len][launch][u32 manifest_len][raw manifest]` then,
//! for each chunk the manifest lists, `[u32 len][frame]`. The target patches each
//! chunk's length and hashes into the manifest, compresses it, sets the header's direct
//! flag from bit 0 of `flags`, opens the result as the bootstrap does and, when it is
//! small, extracts it into a private cache directory (resuming a staging directory
//! when bit 1 is set) and checks it there; anything written beside the cache's own
//! names is a crash. `seed` (fuzz/src/seed.rs) makes inputs from a packed bootstrap.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coldpack_bootstrap::cache::Cache;
use coldpack_bootstrap::manifest::{self, Chunk, Manifest};
use coldpack_bootstrap::payload::{self, sha256, Assembly, Payload, Sections, FLAG_DIRECT};
use coldpack_bootstrap::staging::Staging;
use coldpack_bootstrap::verify::{self, Level};
use libfuzzer_sys::fuzz_target;

const SCRATCH_PREFIX: &str = "coldpack-fuzz-";

/// A directory of this process's own, on tmpfs when there is one. libFuzzer exits
/// without running destructors, so each process leaves its directory behind; the next
/// one removes those of processes that are gone, which keeps tmpfs use to one tree
/// per running fuzzer.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        remove_left_behind(&base);
        let dir = base.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        dir
    })
}

fn remove_left_behind(base: &Path) {
    let Ok(listing) = std::fs::read_dir(base) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Most bytes of contents an input may extract: a few kilobytes of zstd can claim
/// gigabytes, and decoding them proves nothing more.
const MAX_EXTRACTED: u64 = 4 << 20;

/// Makes `chunk` describe `frame` as the packer would: its SHA-256 and length and,
/// when `decode` allows the cost, the SHA-256 of the contents it decodes to (which
/// extraction never checks, but the full warm check after it does). A frame that does
/// not decode to exactly `data_len` bytes keeps the seed's hash: extraction refuses it.
fn patch_hashes(chunk: &mut Chunk, frame: &[u8], decode: bool) {
    chunk.compressed_len = frame.len() as u64;
    chunk.sha256 = sha256(frame);
    if !decode {
        return;
    }
    if let Ok(contents) = zstd::bulk::decompress(frame, chunk.data_len as usize) {
        if contents.len() as u64 == chunk.data_len {
            chunk.data_sha256 = sha256(&contents);
        }
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn len_prefix(data: &mut &[u8], width: usize) -> usize {
    let mut bytes = [0u8; 8];
    let field = take(data, width);
    bytes[..field.len()].copy_from_slice(field);
    u64::from_le_bytes(bytes) as usize
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let flags = len_prefix(&mut data, 1);
    let n = len_prefix(&mut data, 2);
    let launch = take(&mut data, n).to_vec();
    let n = len_prefix(&mut data, 4);
    let mut raw = take(&mut data, n).to_vec();
    let mut frames = Vec::new();
    let mut data_total = 0u64;
    let task_index = payload::deflate_section(&[0, 0, 0, 0], 1).unwrap();
    if let Ok(decoded) = Manifest::decode(raw.clone()) {
        let mut chunks = decoded.chunks.clone();
        data_total = chunks
            .iter()
            .fold(0, |sum, c| sum.saturating_add(c.data_len));
        for chunk in &mut chunks {
            let n = len_prefix(&mut data, 4);
            let frame = take(&mut data, n).to_vec();
            patch_hashes(chunk, &frame, data_total <= MAX_EXTRACTED);
            frames.push(frame);
        }
        raw = manifest::encode(&decoded.entries(), &chunks, &sha256(&task_index));
    } else {
        frames.push(data.to_vec());
    }
    let stored = payload::deflate_section(&raw, 1).unwrap();
    let sections = Sections {
        flags: if flags & 1 == 1 { FLAG_DIRECT } else { 0 },
        launch: &launch,
        manifest: &stored,
        task_index: &task_index,
        chunks: &frames,
    };
    let assembly = Assembly::new(&[], sections);
    let path = scratch().join("payload");
    std::fs::write(&path, assembly.to_vec()).unwrap();

    let Ok(payload) = Payload::open(&path) else {
        return;
    };
    let _ = payload.launch();
    let Ok(manifest) = payload.manifest() else {
        return;
    };
    let _ = payload.task_index(&manifest);
    if data_total > MAX_EXTRACTED {
        return;
    }
    extract_in_jail(&payload, &manifest, flags & 2 == 2);
});

/// Extracts into the scratch cache directory as a cold start would, checks the tree
/// when that worked, and makes sure nothing but the cache's own names appeared.
fn extract_in_jail(payload: &Payload, manifest: &Manifest, resume: bool) {
    let dir = scratch().join("cache");
    let task_dir = scratch().join("task");
    let cache = Cache::new(&dir, "fuzz", &payload.id, &task_dir);
    // What earlier inputs left (their staging kept for resuming) goes as a start's
    // sweep would send it; this input's own staging stays to be continued.
    if let Ok(mut trash) = cache.sweep() {
        let _ = coldpack_bootstrap::cache::remove_all(&mut trash);
    }
    let Ok(staging) = Staging::open(&cache, manifest) else {
        return;
    };
    let name = staging.name.clone();
    let extracted = coldpack_bootstrap::extract::extract(
        payload,
        manifest,
        &staging,
        task_dir.as_os_str().as_encoded_bytes(),
    );
    if extracted.is_ok() {
        let cache_dir = cache.open_dir().unwrap();
        let tree = verify::Tree {
            cache_dir: &cache_dir,
            root_name: name.as_bytes(),
            watermark: manifest::Mtime {
                sec: i64::MAX,
                nsec: 0,
            },
        };
        let checked = verify::check_tree(&tree, manifest, Level::Full);
        assert!(
            checked.is_ok(),
            "a tree just extracted fails its check: {checked:?}"
        );
    }
    let beside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".staging") && !n.ends_with(".progress"))
        .collect();
    assert!(
        beside.is_empty(),
        "extraction wrote beside staging: {beside:?}"
    );
    if !resume {
        staging.discard();
    }
}
