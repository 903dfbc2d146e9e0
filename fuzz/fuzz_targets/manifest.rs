//! The manifest and launch readers on arbitrary bytes: they must refuse, never panic,
//! never allocate what the bytes merely claim; what they accept must re-encode to the
//! same bytes and cut into pieces that cover every file exactly.
#![no_main]

use coldpack_bootstrap::manifest::{EntryKind, Launch, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(launch) = Launch::decode(data) {
        assert_eq!(
            launch.encode(),
            data,
            "launch decode/encode is not canonical"
        );
    }
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    assert_eq!(
        manifest.encode(),
        data,
        "manifest decode/encode is not canonical"
    );
    let plan = manifest.plan();
    assert_eq!(plan.len(), manifest.chunks.len());
    let mut covered = vec![0u64; manifest.entries.len()];
    for (chunk, pieces) in manifest.chunks.iter().zip(&plan) {
        assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), chunk.data_len);
        for piece in pieces {
            assert_eq!(piece.offset, covered[piece.entry], "pieces out of order");
            covered[piece.entry] += piece.len;
        }
    }
    for (entry, done) in manifest.entries.iter().zip(&covered) {
        assert_eq!(entry.file_size(), *done, "a file is not covered exactly");
    }
    let parents = manifest
        .parents()
        .expect("an accepted manifest lists every parent");
    for (index, &parent) in parents.iter().enumerate().skip(1) {
        let parent = parent as usize;
        assert!(parent < index, "a parent listed after its child");
        assert_eq!(manifest.entries[parent].kind, EntryKind::Dir);
    }
});
