//! A whole payload, with hashes made to match, so that the fuzzer explores what lies
//! behind them (the manifest's rules, the zstd frames, the tar streams checked against
//! the plan, the extraction) instead of bouncing off the first SHA-256.
//!
//! Input: `[u8 flags][u16 launch_len][launch][u32 manifest_len][manifest]` then, for
//! each chunk the manifest lists, `[u32 len][compressed bytes]`. The target patches
//! each chunk's length and hash into the manifest, stores it zstd-compressed as the
//! packer does when `flags` is odd (raw otherwise, which the bootstrap also reads),
//! adds header and trailer, opens it like the bootstrap does and, when it is small,
//! extracts it into a private directory and checks that nothing appeared beside the
//! staging directory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use coldpack_bootstrap::chunk::{self, ChunkError};
use coldpack_bootstrap::manifest::Manifest;
use coldpack_bootstrap::payload::{self, sha256, Header, Payload, Trailer};
use libfuzzer_sys::fuzz_target;

/// A directory of this process's own, on tmpfs when there is one.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("coldpack-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("jail")).unwrap();
        dir
    })
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
    let compress = len_prefix(&mut data, 1) & 1 == 1;
    let n = len_prefix(&mut data, 2);
    let launch = take(&mut data, n).to_vec();
    let n = len_prefix(&mut data, 4);
    let mut manifest_bytes = take(&mut data, n).to_vec();
    let mut chunks = Vec::new();
    let mut data_total = 0u64;
    if let Ok(mut manifest) = Manifest::decode(&manifest_bytes) {
        for chunk in &mut manifest.chunks {
            let n = len_prefix(&mut data, 4);
            let bytes = take(&mut data, n);
            chunk.compressed_len = bytes.len() as u64;
            chunk.sha256 = sha256(bytes);
            chunks.extend_from_slice(bytes);
            data_total = data_total.saturating_add(chunk.data_len);
        }
        manifest_bytes = manifest.encode();
        if compress {
            manifest_bytes = payload::deflate_manifest(&manifest_bytes, 3).unwrap();
        }
    } else {
        chunks.extend_from_slice(data);
    }
    let header = Header {
        launch_len: launch.len() as u64,
        manifest_len: manifest_bytes.len() as u64,
        chunks_len: chunks.len() as u64,
        launch_sha256: sha256(&launch),
        manifest_sha256: sha256(&manifest_bytes),
    }
    .encode();
    let payload_len = (header.len() + launch.len() + manifest_bytes.len() + chunks.len()) as u64;
    let trailer = Trailer {
        offset: 0,
        len: payload_len,
        header_sha256: sha256(&header),
    }
    .encode();
    let file = [&header[..], &launch, &manifest_bytes, &chunks, &trailer].concat();
    let path = scratch().join("payload");
    std::fs::write(&path, &file).unwrap();

    let Ok(payload) = Payload::open(&path) else {
        return;
    };
    let _ = payload.launch();
    let Ok(manifest) = payload.manifest() else {
        return;
    };
    // A few kilobytes of zstd can claim gigabytes; decoding them proves nothing more.
    if data_total > 4 << 20 {
        return;
    }
    let starts = manifest.chunk_starts();
    for (index, pieces) in manifest.plan().iter().enumerate() {
        let _ = chunk::read_pieces(
            &payload,
            &manifest,
            index,
            starts[index],
            pieces,
            |_, _, member| {
                std::io::copy(member, &mut std::io::sink()).map_err(ChunkError::Read)?;
                Ok(())
            },
        );
    }
    let jail = scratch().join("jail");
    let staging = jail.join("staging");
    let _ = coldpack_bootstrap::extract::extract(&payload, &manifest, &staging);
    let beside: Vec<_> = std::fs::read_dir(&jail)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "staging")
        .collect();
    assert!(
        beside.is_empty(),
        "extraction wrote beside staging: {beside:?}"
    );
    coldpack_bootstrap::cache::remove_tree(&staging).unwrap();
});
