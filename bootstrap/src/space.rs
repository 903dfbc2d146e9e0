//! What a tree takes on the cache directory's filesystem: the one rule that both the
//! packer's `/tmp` budget and the bootstrap's space check apply, so that a pack that
//! says "fits" is never refused at start.
//!
//! Lambda's `/tmp` is ext4 with 4 KiB blocks: a file takes its size rounded up to
//! blocks, a directory one block, a symlink one block when its target is too long to
//! live in the inode (60 bytes on ext4; tmpfs keeps more). Links into the task part
//! name an absolute path the packer cannot know, so they count as long. Every entry
//! but a hardlink takes an inode. A start also writes its completion marker and, while
//! extracting, its progress record: one small file each.

use crate::manifest::{Kind, Manifest};

/// The block size space is counted in.
pub const BLOCK: u64 = 4096;
/// The longest symlink target ext4 keeps inside the inode.
const INLINE_LINK: u64 = 59;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Need {
    pub bytes: u64,
    pub inodes: u64,
}

impl Need {
    /// What extracting `manifest` into an empty cache directory takes.
    pub fn of(manifest: &Manifest) -> Need {
        let mut need = Need {
            bytes: 2 * BLOCK,
            inodes: 2,
        };
        for index in 0..manifest.len() {
            need.add(entry(manifest, index));
        }
        need
    }

    /// What is still to write when the chunks marked in `done` are already in staging:
    /// their whole files are there (directories are counted again, to be safe).
    pub fn remaining(manifest: &Manifest, done: &[bool]) -> Need {
        let mut need = Need::of(manifest);
        if !done.contains(&true) {
            return need;
        }
        let plan = manifest.plan();
        for (index, _) in done.iter().enumerate().filter(|(_, &d)| d) {
            for piece in plan.chunk(index).iter().filter(|p| p.whole) {
                let taken = entry(manifest, piece.entry);
                need.bytes -= taken.bytes;
                need.inodes -= taken.inodes;
            }
        }
        need
    }

    fn add(&mut self, other: Need) {
        self.bytes += other.bytes;
        self.inodes += other.inodes;
    }
}

fn entry(manifest: &Manifest, index: usize) -> Need {
    let (bytes, inodes) = match manifest.kind(index) {
        Kind::File => (manifest.size(index).div_ceil(BLOCK) * BLOCK, 1),
        Kind::Dir => (BLOCK, 1),
        Kind::Symlink if manifest.link_target(index).len() as u64 > INLINE_LINK => (BLOCK, 1),
        Kind::Symlink => (0, 1),
        Kind::TaskDir | Kind::TaskFile => (BLOCK, 1),
        Kind::Hardlink => (0, 0),
    };
    Need { bytes, inodes }
}
