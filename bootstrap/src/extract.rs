//! The cold path: write the payload's tree into its staging directory.
//!
//! Decoding threads, as many as the memory budget allows (two), decode chunks and
//! write the pieces of files each carries, straight from the decoder's output; a file
//! split across chunks is written at its offset by whichever threads hold its pieces.
//! Every entry is reached as one name in an open directory (see `cursor`), and
//! directories are made by the first thread that needs one, with a mode that lets
//! their owner write, so nothing blocks their children. After each chunk its thread
//! appends it to the progress record, so a killed start can be resumed (see
//! `staging`). Then, on every core: what no chunk carries (directories no file
//! needed, empty files, symlinks, links into the task part) and the final mode and
//! mtime of split files; hardlinks once every file exists; and last the directories'
//! modes and mtimes, which nothing changes once all entries are in place. Every
//! directory lets its owner read and search it (the manifest refuses any other), so
//! these can run in any order.
//!
//! Every path, mode and mtime comes from the validated manifest. Every entry is
//! created with `O_EXCL` (a split file's pieces with `O_NOFOLLOW`), `mkdirat`,
//! `symlinkat` or `linkat`, none of which follows a link in the last component,
//! inside directories this start has made, so nothing can be written outside staging.
//! A resumed start first removes whatever a killed one may have left under the name of
//! a whole file it writes; split files' pieces are rewritten in place.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::chunk::{self, Decoder, Sink, THREAD_MEMORY};
use crate::cursor::{Cursor, Made};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Kind, Manifest, Mtime, Piece, Plan};
use crate::parallel;
use crate::payload::Payload;
use crate::staging::Staging;
use crate::sys;

/// What a cold start may hold in memory, the manifest and the decoding threads'
/// windows and buffers together, leaving room for the program itself within 32 MiB.
/// At `chunk::THREAD_MEMORY` a thread, that is two decoding threads.
const MEMORY_BUDGET: usize = 27 << 20;
/// Entries per job of the finishing passes: enough to make a job worth taking.
const BATCH: usize = 256;

pub struct Stats {
    pub threads: usize,
    /// Chunks a killed start had written and this one kept.
    pub resumed: usize,
}

fn failed(manifest: &Manifest, what: &str, index: usize, e: std::io::Error) -> Error {
    Error::io_at(ErrorKind::Extract, what, &manifest.shown(index), e)
}

/// Decoding threads for `manifest`: one per core, as many as the memory budget holds.
fn threads(manifest: &Manifest) -> usize {
    let by_memory = MEMORY_BUDGET.saturating_sub(manifest.memory()) / THREAD_MEMORY;
    parallel::threads_for(manifest.chunks.len(), by_memory)
}

/// Extracts the whole tree into `staging`, continuing what an earlier start recorded
/// there. `task_dir` is where links into the task part point. On error the caller
/// discards staging; nothing was written anywhere else.
pub fn extract(
    payload: &Payload,
    manifest: &Manifest,
    staging: &Staging,
    task_dir: &[u8],
) -> Result<Stats> {
    if manifest.is_direct() {
        return Err(Error::new(
            ErrorKind::Extract,
            "the whole tree is in the task part: there is nothing to extract",
        ));
    }
    // Modes recorded in the payload are applied exactly; the process gets its umask
    // back (for the runtime, Lambda's) before anything else runs.
    let umask = sys::set_umask(0);
    let extracted = extract_tree(payload, manifest, staging, task_dir);
    sys::set_umask(umask);
    extracted
}

fn extract_tree(
    payload: &Payload,
    manifest: &Manifest,
    staging: &Staging,
    task_dir: &[u8],
) -> Result<Stats> {
    let tree = Tree {
        manifest,
        staging,
        plan: manifest.plan(),
        made: Made::new(manifest, !staging.resumed),
    };
    if staging.closing {
        // A killed start had begun closing directories: open them again for writing.
        tree.each_entry(|cursor, index| match manifest.kind(index) {
            Kind::Dir => tree.set_dir(cursor, index, Some(0o700), None),
            _ => Ok(()),
        })?;
    }
    let (threads, resumed) = tree.write_chunks(payload)?;
    tree.finish_entries(task_dir)?;
    staging.closing()?;
    tree.close_dirs()?;
    Ok(Stats { threads, resumed })
}

/// A tree being extracted into staging.
struct Tree<'a> {
    manifest: &'a Manifest,
    staging: &'a Staging,
    /// Where each file's pieces are, in which chunks.
    plan: Plan,
    made: Made,
}

impl Tree<'_> {
    fn cursor(&self) -> Cursor<'_> {
        let root = self.staging.name.as_bytes();
        Cursor::new(
            self.manifest,
            &self.staging.cache_dir,
            root,
            Some(&self.made),
        )
    }

    /// Decodes every chunk not already written and writes its pieces, on the decoding
    /// threads;
    /// returns the threads used and the chunks kept from a killed start.
    fn write_chunks(&self, payload: &Payload) -> Result<(usize, usize)> {
        let (manifest, staging) = (self.manifest, self.staging);
        let plan = &self.plan;
        let starts = manifest.chunk_starts();
        let threads = threads(manifest);
        let resumed = AtomicUsize::new(0);
        parallel::run(
            manifest.chunks.len(),
            threads,
            || Ok((self.cursor(), Decoder::new()?)),
            |index, (cursor, decoder)| {
                let pieces = plan.chunk(index);
                if staging.done[index] && intact(manifest, cursor, pieces) {
                    resumed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                let mut writer = Writer {
                    tree: self,
                    cursor,
                    file: None,
                };
                let start = starts[index];
                chunk::read_pieces(
                    payload,
                    manifest,
                    index,
                    start,
                    pieces,
                    decoder,
                    &mut writer,
                )?;
                staging.chunk_done(index)
            },
        )?;
        Ok((threads, resumed.into_inner()))
    }

    /// Gives every directory its mtime, last, and its mode where it was not made with
    /// it (or where a killed start may have changed it).
    fn close_dirs(&self) -> Result<()> {
        let manifest = self.manifest;
        self.each_entry(|cursor, index| {
            if manifest.kind(index) != Kind::Dir {
                return Ok(());
            }
            // Staging itself was made under the process's umask.
            let mode = manifest.mode(index);
            let chmod = index == 0 || self.staging.resumed || Made::mode(manifest, index) != mode;
            self.set_dir(
                cursor,
                index,
                chmod.then_some(mode),
                Some(manifest.mtime(index)),
            )
        })
    }

    /// Gives directory `index` a mode and an mtime, either or both. The root is
    /// reached from the cache directory by the staging name.
    fn set_dir(
        &self,
        cursor: &mut Cursor,
        index: usize,
        mode: Option<u32>,
        mtime: Option<Mtime>,
    ) -> Result<()> {
        let apply = |at: &File, name: &[u8]| {
            if let Some(mode) = mode {
                sys::chmod_at(at, name, mode)?;
            }
            match mtime {
                Some(mtime) => sys::set_times_at(at, name, mtime),
                None => Ok(()),
            }
        };
        let done = if index == 0 {
            apply(cursor.base(), self.staging.name.as_bytes())
        } else {
            cursor
                .dir(self.manifest.parent(index))
                .and_then(|parent| apply(parent, self.manifest.name(index)))
        };
        done.map_err(|e| failed(self.manifest, "cannot set mode and mtime of", index, e))
    }

    /// Runs `work(cursor, index)` for every entry, in batches spread over every core.
    fn each_entry(&self, work: impl Fn(&mut Cursor, usize) -> Result<()> + Sync) -> Result<()> {
        let count = self.manifest.len();
        let jobs = count.div_ceil(BATCH);
        parallel::run(
            jobs,
            parallel::threads_for(jobs, usize::MAX),
            || Ok(self.cursor()),
            |job, cursor| {
                (job * BATCH..count.min((job + 1) * BATCH)).try_for_each(|i| work(cursor, i))
            },
        )
    }
}

/// Whether the pieces a killed start recorded as written still look as the manifest
/// says: whole files with their final type, mode, size and mtime; pieces of split
/// files inside a regular file long enough to hold them.
fn intact(manifest: &Manifest, cursor: &mut Cursor, pieces: &[Piece]) -> bool {
    pieces.iter().all(|piece| {
        let index = piece.entry;
        let Ok(dir) = cursor.dir(manifest.parent(index)) else {
            return false;
        };
        let Ok(stat) = sys::lstat_at(dir, manifest.name(index)) else {
            return false;
        };
        let regular = stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
        let size = stat.st_size as u64;
        if piece.whole {
            let mtime = manifest.mtime(index);
            regular
                && stat.st_mode & 0o7777 == manifest.mode(index)
                && size == manifest.size(index)
                && (stat.st_mtime, stat.st_mtime_nsec as u32) == (mtime.sec, mtime.nsec)
        } else {
            regular && size >= piece.offset + piece.len
        }
    })
}

/// Writes the pieces of one chunk into their files.
struct Writer<'a, 'c> {
    tree: &'a Tree<'a>,
    cursor: &'c mut Cursor<'a>,
    file: Option<(File, u64)>,
}

impl Sink for Writer<'_, '_> {
    fn begin(&mut self, piece: &Piece) -> Result<()> {
        let (manifest, index) = (self.tree.manifest, piece.entry);
        let fail = |what: &str, e| failed(manifest, what, index, e);
        let dir = self
            .cursor
            .dir(manifest.parent(index))
            .map_err(|e| fail("cannot create the directory of", e))?;
        let name = manifest.name(index);
        // A new file's descriptor is writable whatever mode it is created with, so a
        // whole file gets its final mode at once; a split one stays owner-writable for
        // its other pieces until the tree is finished.
        let file = if piece.whole {
            self.tree
                .replace(dir, name)
                .map_err(|e| fail("cannot remove", e))?;
            sys::create_file(dir, name, manifest.mode(index))
        } else {
            sys::open_shared_file(dir, name)
        };
        self.file = Some((file.map_err(|e| fail("cannot create", e))?, piece.offset));
        Ok(())
    }

    fn write(&mut self, piece: &Piece, bytes: &[u8]) -> Result<()> {
        let Some((file, at)) = &mut self.file else {
            return Ok(());
        };
        let written = if piece.whole {
            file.write_all(bytes)
        } else {
            file.write_all_at(bytes, *at)
        };
        *at += bytes.len() as u64;
        written.map_err(|e| failed(self.tree.manifest, "cannot write", piece.entry, e))
    }

    fn end(&mut self, piece: &Piece) -> Result<()> {
        if let (Some((file, _)), true) = (self.file.take(), piece.whole) {
            sys::set_file_times(&file, self.tree.manifest.mtime(piece.entry))
                .map_err(|e| failed(self.tree.manifest, "cannot set mtime of", piece.entry, e))?;
        }
        Ok(())
    }
}

impl Tree<'_> {
    /// Everything no chunk carries, then the hardlinks, which need their files.
    fn finish_entries(&self, task_dir: &[u8]) -> Result<()> {
        let split = self.plan.split_files();
        self.each_entry(|cursor, index| self.finish_entry(cursor, index, &split, task_dir))?;
        self.each_entry(|cursor, index| self.link_hardlink(cursor, index))
    }

    /// Makes entry `index` if no chunk made it, or gives a split file its metadata.
    fn finish_entry(
        &self,
        cursor: &mut Cursor,
        index: usize,
        split: &[usize],
        task_dir: &[u8],
    ) -> Result<()> {
        let manifest = self.manifest;
        let fail = |what: &str, e| failed(manifest, what, index, e);
        let kind = manifest.kind(index);
        if kind == Kind::Dir {
            // Most were made for the files they hold.
            if !self.made.contains(index) {
                cursor.dir(index).map_err(|e| fail("cannot create", e))?;
            }
            return Ok(());
        }
        let dir = cursor
            .dir(manifest.parent(index))
            .map_err(|e| fail("cannot create the directory of", e))?;
        let name = manifest.name(index);
        let target = match kind {
            Kind::Symlink => manifest.link_target(index).to_vec(),
            Kind::TaskDir | Kind::TaskFile => [task_dir, b"/", &manifest.path(index)].concat(),
            Kind::File if manifest.size(index) == 0 => {
                self.replace(dir, name)
                    .map_err(|e| fail("cannot remove", e))?;
                let file = sys::create_file(dir, name, manifest.mode(index))
                    .map_err(|e| fail("cannot create", e))?;
                return sys::set_file_times(&file, manifest.mtime(index))
                    .map_err(|e| fail("cannot set mtime of", e));
            }
            Kind::File if split.binary_search(&index).is_ok() => {
                return sys::chmod_at(dir, name, manifest.mode(index))
                    .and_then(|()| sys::set_times_at(dir, name, manifest.mtime(index)))
                    .map_err(|e| fail("cannot finish", e));
            }
            _ => return Ok(()),
        };
        self.replace(dir, name)
            .map_err(|e| fail("cannot remove", e))?;
        sys::symlink_at(&target, dir, name)
            .and_then(|()| sys::set_times_at(dir, name, manifest.mtime(index)))
            .map_err(|e| fail("cannot create symlink", e))
    }

    /// Entry `index`, if a hardlink, linked to its file.
    fn link_hardlink(&self, cursor: &mut Cursor, index: usize) -> Result<()> {
        let manifest = self.manifest;
        if manifest.kind(index) != Kind::Hardlink {
            return Ok(());
        }
        let target = manifest.hardlink_target(index);
        let fail = |e| failed(manifest, "cannot create hardlink", index, e);
        // Two directories at once: the file's, duplicated, and the link's.
        let from = cursor
            .dir(manifest.parent(target))
            .and_then(File::try_clone)
            .map_err(fail)?;
        let dir = cursor.dir(manifest.parent(index)).map_err(fail)?;
        self.replace(dir, manifest.name(index)).map_err(fail)?;
        sys::link_at(&from, manifest.name(target), dir, manifest.name(index)).map_err(fail)
    }

    /// A resumed start removes whatever a killed one left under a name it is about to
    /// create; a fresh one has nothing there.
    fn replace(&self, dir: &File, name: &[u8]) -> std::io::Result<()> {
        if self.staging.resumed {
            sys::remove_at(dir, name)?;
        }
        Ok(())
    }
}
