//! The readers of the payload's small sections on arbitrary bytes: they must refuse,
//! never panic, never allocate what the bytes merely claim. What they accept must
//! re-encode to the same bytes (so nothing is read that the encoder could not have
//! written), and an accepted manifest must keep every rule extraction relies on:
//! parents listed before their children as directories, children of one directory in
//! one run with strictly increasing names, and a plan that covers every file exactly.
#![no_main]

use coldpack_bootstrap::launch::{check_name, Launch};
use coldpack_bootstrap::manifest::{self, Kind, Manifest};
use coldpack_bootstrap::task::TaskIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(launch) = Launch::decode(data) {
        assert_eq!(
            launch.encode(),
            data,
            "launch decode/encode is not canonical"
        );
    }
    if let Ok(index) = TaskIndex::decode(data) {
        assert_eq!(
            index.encode(),
            data,
            "task index decode/encode is not canonical"
        );
    }
    let Ok(manifest) = Manifest::decode(data.to_vec()) else {
        return;
    };
    let entries = manifest.entries();
    assert_eq!(
        manifest::encode(&entries, &manifest.chunks, &manifest.task_index_sha256),
        data,
        "manifest decode/encode is not canonical"
    );
    for index in 1..manifest.len() {
        let parent = manifest.parent(index);
        assert!(parent < index, "a parent listed after its child");
        assert_eq!(
            manifest.kind(parent),
            Kind::Dir,
            "a parent that is not a directory"
        );
        assert!(
            check_name(manifest.name(index)).is_ok(),
            "a name that is not one component"
        );
        if index > 1 && manifest.parent(index - 1) == parent {
            assert!(
                manifest.name(index - 1) < manifest.name(index),
                "names out of order"
            );
        } else if index > 1 {
            assert!(
                manifest.parent(index - 1) < parent,
                "a directory's children split"
            );
        }
    }
    let plan = manifest.plan();
    let mut covered = vec![0u64; manifest.len()];
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        let pieces = plan.chunk(index);
        assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), chunk.data_len);
        for piece in pieces {
            assert_eq!(piece.offset, covered[piece.entry], "pieces out of order");
            covered[piece.entry] += piece.len;
        }
    }
    for (index, done) in covered.iter().enumerate() {
        assert_eq!(manifest.size(index), *done, "a file is not covered exactly");
    }
});
