//! Code storage first: which parts of the tree stay in the deployment as plain files
//! (the task part) and which go into the payload to be extracted into `/tmp`.
//!
//! Lambda deploys the zip before init, read-only and at no cost to it, so every entry
//! kept there is one a cold start need not create. What a zip carries as Lambda keeps
//! it qualifies: directories that hold something, regular files that are not
//! hardlinked and whose mode can be given as 0644 or 0755 (the function runs as
//! another user than the files' owner, so the deployment must be world-readable; see
//! [`deployed_mode`]), with names a zip stores plainly, and nothing `--keep-in-tmp`
//! names. docs/limits.md lists the sources for these rules.
//!
//! Whole directories are preferred: a directory whose whole subtree qualifies becomes
//! one symlink in the `/tmp` tree, so paths below it, `..` inside it, and programs that
//! find their siblings through their own real path keep working. A single file kept
//! outside such a directory is reached through a symlink to it alone, and a program
//! that resolves its real path then looks for its siblings in the deployment, where
//! only kept entries are. So a single file is kept only when it is large (the saving
//! is then in bytes) and neither a program nor a JavaScript module (which find their
//! real path); never the entrypoint, nor a directory holding it, unless the whole tree
//! is kept (then nothing goes to `/tmp` at all). A kept directory's `..` leads into
//! the task part too, so the task part's copy of each directory above a kept entry
//! also holds that directory's small files (still extracted into `/tmp` as well).
//!
//! Within the budget (`--task-budget`, which counts everything coldpack puts in the
//! deployment: the bootstrap with its payload, and the kept files), directories and
//! files are kept greedily by the cold-start work they save (see `work`) per byte of
//! budget they cost: their size less what they would have taken compressed in the
//! payload. A directory that does not fit is considered again as its children.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::PathBuf;

use anyhow::Result;
use coldpack_bootstrap::manifest::{Entry, EntryKind};
use coldpack_bootstrap::task::TaskEntry;

use crate::head::Head;
use crate::walk::{Globs, Walked};
use crate::work;

/// A file outside a kept directory is kept alone only from this size on.
pub const SINGLE_FILE_MIN: u64 = 1 << 20;
/// What each kept entry adds to the payload's task index (its hash, mostly).
const INDEX_BYTES: u64 = 56;
/// What each entry of the `/tmp` tree adds to the payload's manifest, compressed.
const MANIFEST_BYTES: u64 = 12;

/// What decides the split.
pub struct Rules<'a> {
    /// Bytes of code storage coldpack may fill; 0 keeps nothing.
    pub budget: u64,
    pub keep_in_tmp: &'a Globs,
    /// The file the entrypoint resolves to.
    pub entrypoint: usize,
    /// The stock bootstrap's size.
    pub bootstrap_len: u64,
}

/// The tree, split.
pub struct Split {
    /// The `/tmp` tree in manifest order, with kept parts as links into the task part.
    pub tree: Vec<Entry>,
    /// Where each tree entry's contents come from.
    pub sources: Vec<PathBuf>,
    /// Everything under the task part's directory, sorted by path (hashes still zero),
    /// with the file each kept file is copied from.
    pub task: Vec<(TaskEntry, PathBuf)>,
    /// For each walked entry, whether the runtime reaches it in the deployment.
    pub in_deployment: Vec<bool>,
    /// Entries of the walked tree now reached through the task part.
    pub kept_entries: u64,
    pub kept_bytes: u64,
    /// Estimated cold-start time the split saves, in nanoseconds.
    pub saved_nanos: u64,
}

/// Sums over a subtree.
#[derive(Clone, Copy, Default)]
struct Sums {
    entries: u64,
    bytes: u64,
    estimate: u64,
}

impl Sums {
    fn add(&mut self, other: Sums) {
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.estimate += other.estimate;
    }

    /// Budget bytes keeping this costs: its size, less what it takes compressed in the
    /// payload, plus its share of the task index.
    fn cost(&self) -> u64 {
        (self.bytes + self.entries * INDEX_BYTES)
            .saturating_sub(self.estimate + self.entries * MANIFEST_BYTES)
            .max(1)
    }

    fn benefit(&self) -> u64 {
        work::nanos(self.entries, self.bytes)
    }
}

/// A candidate, ordered by benefit per byte of cost.
struct Candidate {
    index: usize,
    sums: Sums,
}

impl Candidate {
    fn ratio(&self) -> u128 {
        (u128::from(self.sums.benefit()) << 32) / u128::from(self.sums.cost())
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Highest ratio first; the earlier entry first among equals, so the result
        // never depends on the heap's order.
        self.ratio()
            .cmp(&other.ratio())
            .then_with(|| other.index.cmp(&self.index))
    }
}

/// Splits `walked` by `rules`. `estimate` gives, for the files listed, the bytes each
/// would take compressed in the payload; it is asked only when the budget binds.
pub fn split(
    walked: &Walked,
    heads: &[Head],
    rules: &Rules,
    estimate: impl FnOnce(&[usize]) -> Result<Vec<u64>>,
) -> Result<Split> {
    let entries = &walked.entries;
    let mut whole = qualifying(walked, rules);
    let blocked = holds_entrypoint(entries, rules.entrypoint);
    propagate_whole(entries, &mut whole);
    let (estimates, payload) = payload_estimate(entries, &whole, rules, estimate)?;
    let sums = subtree_sums(entries, &estimates);
    let candidate = |i: usize| -> bool {
        whole[i]
            && !blocked[i]
            && match entries[i].kind {
                EntryKind::Dir => true,
                EntryKind::File { .. } => {
                    i != rules.entrypoint && loose_file_ok(&entries[i], &heads[i])
                }
                _ => false,
            }
    };
    let available = rules
        .budget
        .saturating_sub(rules.bootstrap_len)
        .saturating_sub(payload);
    let mirrorable: Vec<bool> = (0..entries.len())
        .map(|i| {
            whole[i]
                && matches!(entries[i].kind, EntryKind::File { .. })
                && entries[i].file_size() < SINGLE_FILE_MIN
        })
        .collect();
    let mut mirror = vec![0; entries.len()];
    for index in (1..entries.len()).filter(|&i| mirrorable[i]) {
        mirror[entries[index].parent as usize] += entries[index].file_size() + INDEX_BYTES;
    }
    let chosen = choose(entries, &sums, &mirror, available, candidate);
    Ok(build(walked, &chosen, &mirrorable, &sums))
}

/// What each qualifying file would take in the payload, and what the whole payload
/// would take if nothing were kept.
fn payload_estimate(
    entries: &[Entry],
    whole: &[bool],
    rules: &Rules,
    estimate: impl FnOnce(&[usize]) -> Result<Vec<u64>>,
) -> Result<(Vec<u64>, u64)> {
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| whole[i] && matches!(entries[i].kind, EntryKind::File { .. }))
        .collect();
    let all: u64 = entries.iter().map(Entry::file_size).sum();
    let keep_all_raw = rules.bootstrap_len + all + entries.len() as u64 * INDEX_BYTES;
    let mut estimates = vec![0; entries.len()];
    let mut payload: u64 = entries.len() as u64 * MANIFEST_BYTES;
    if rules.budget > 0 && keep_all_raw > rules.budget {
        // Near the budget, what each file would take in the payload matters.
        for (&index, size) in files.iter().zip(estimate(&files)?) {
            estimates[index] = size;
        }
        let others: u64 = (0..entries.len())
            .filter(|&i| !whole[i])
            .map(|i| entries[i].file_size())
            .sum();
        payload += others + estimates.iter().sum::<u64>();
    } else {
        // Everything fits as it is (or nothing may be kept): the payload is counted
        // at full size, so a file kept saves all of it there.
        for &index in &files {
            estimates[index] = entries[index].file_size();
        }
        payload += all;
    }
    Ok((estimates, payload))
}

/// Whether each entry qualifies by itself: see the module's documentation.
fn qualifying(walked: &Walked, rules: &Rules) -> Vec<bool> {
    let entries = &walked.entries;
    let mut empty = vec![true; entries.len()];
    for entry in entries.iter().skip(1) {
        empty[entry.parent as usize] = false;
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let kind_ok = match entry.kind {
                // Nothing says Lambda makes a zip's empty directories.
                EntryKind::Dir => !empty[index],
                EntryKind::File { .. } => !walked.shared[index] && deployed_mode(entry).is_some(),
                _ => false,
            };
            kind_ok && zip_safe(entry.name()) && !rules.keep_in_tmp.matches(&entry.path)
        })
        .collect()
}

/// The mode an entry gets in the deployment, where the function is not its owner and
/// only the bits for others count: directories 0755; files 0644 or 0755 as they are,
/// and any other executable 0755 (an executable's exact mode is rarely checked, and
/// the deployment is read-only anyway). Other files keep a restrictive mode for a
/// reason (a private key), so they stay in `/tmp`: `None`.
pub fn deployed_mode(entry: &Entry) -> Option<u32> {
    match entry.kind {
        EntryKind::Dir => Some(0o755),
        EntryKind::File { .. } if entry.mode == 0o644 || entry.mode & 0o100 != 0 => {
            Some(if entry.mode & 0o100 != 0 {
                0o755
            } else {
                0o644
            })
        }
        _ => None,
    }
}

/// Whether a file may be kept outside a kept directory: large, a library or data
/// rather than a program or a JavaScript module (programs and Node resolve their real
/// path and would look for their siblings in the deployment).
fn loose_file_ok(entry: &Entry, head: &Head) -> bool {
    const MODULES: [&[u8]; 4] = [b".js", b".mjs", b".cjs", b".node"];
    entry.file_size() >= SINGLE_FILE_MIN
        && !head.program
        && !MODULES.iter().any(|ext| entry.name().ends_with(ext))
}

/// Names a zip stores as they are: UTF-8 without control characters or backslashes.
fn zip_safe(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(|s| !s.chars().any(|c| c.is_control() || c == '\\'))
}

/// The entrypoint's file and every directory holding it (but the root): keeping any
/// of them alone would make the entrypoint find itself in the deployment.
fn holds_entrypoint(entries: &[Entry], entrypoint: usize) -> Vec<bool> {
    let mut blocked = vec![false; entries.len()];
    let mut at = entrypoint;
    while at != 0 {
        blocked[at] = true;
        at = entries[at].parent as usize;
    }
    blocked
}

/// A directory is whole when it and everything below it qualifies. Manifest order
/// lists children after their parent, so one pass backwards settles it.
fn propagate_whole(entries: &[Entry], whole: &mut [bool]) {
    for index in (1..entries.len()).rev() {
        if !whole[index] {
            whole[entries[index].parent as usize] = false;
        }
    }
}

fn subtree_sums(entries: &[Entry], estimates: &[u64]) -> Vec<Sums> {
    let mut sums: Vec<Sums> = entries
        .iter()
        .zip(estimates)
        .map(|(entry, &estimate)| Sums {
            entries: 1,
            bytes: entry.file_size(),
            estimate,
        })
        .collect();
    for index in (1..entries.len()).rev() {
        let own = sums[index];
        sums[entries[index].parent as usize].add(own);
    }
    sums
}

/// The largest candidates to start from: the root if it is one, else the highest
/// candidates below it.
fn highest_candidates(
    entries: &[Entry],
    children: &[Vec<usize>],
    candidate: &impl Fn(usize) -> bool,
    sums: &[Sums],
) -> BinaryHeap<Candidate> {
    let mut heap = BinaryHeap::new();
    let mut roots = vec![0];
    while let Some(index) = roots.pop() {
        if candidate(index) {
            heap.push(Candidate {
                index,
                sums: sums[index],
            });
            continue;
        }
        for &child in &children[index] {
            if candidate(child) {
                heap.push(Candidate {
                    index: child,
                    sums: sums[child],
                });
            } else if entries[child].kind == EntryKind::Dir {
                roots.push(child);
            }
        }
    }
    heap
}

/// What `choose` picked.
struct Chosen {
    /// Entries kept whole, each reached through one link.
    kept: Vec<bool>,
    /// Directories above a kept entry, whose small files the task part copies too.
    mirrored: Vec<bool>,
}

/// The entries to keep whole, greedily by benefit per byte of cost within `available`.
///
/// A program that resolves its real path inside a kept directory and climbs out of it
/// with `..` lands in the task part's copy of the directories above (Node resolves
/// every module this way, and `require('../../package.json')` is common). So those
/// copies get the small files of the directories they mirror (`mirror` gives their
/// bytes, by directory), paid for from the budget by the first entry kept below them;
/// the files are extracted into `/tmp` as well, so the `/tmp` tree does not change.
fn choose(
    entries: &[Entry],
    sums: &[Sums],
    mirror: &[u64],
    mut available: u64,
    candidate: impl Fn(usize) -> bool,
) -> Chosen {
    let mut kept = vec![false; entries.len()];
    let mut mirrored = vec![false; entries.len()];
    let ancestors = |index: usize| {
        std::iter::successors(
            (index != 0).then(|| entries[index].parent as usize),
            |&at| (at != 0).then(|| entries[at].parent as usize),
        )
    };
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    for index in 1..entries.len() {
        children[entries[index].parent as usize].push(index);
    }
    let offer = |index: usize, heap: &mut BinaryHeap<Candidate>| {
        if candidate(index) {
            heap.push(Candidate {
                index,
                sums: sums[index],
            });
        }
    };
    let mut heap = highest_candidates(entries, &children, &candidate, sums);
    while let Some(best) = heap.pop() {
        let copies: u64 = ancestors(best.index)
            .filter(|&dir| !mirrored[dir])
            .map(|dir| mirror[dir])
            .sum();
        let cost = best.sums.cost() + copies;
        if cost <= available {
            available -= cost;
            kept[best.index] = true;
            for dir in ancestors(best.index) {
                mirrored[dir] = true;
            }
        } else if entries[best.index].kind == EntryKind::Dir {
            for &child in &children[best.index] {
                offer(child, &mut heap);
            }
        }
    }
    Chosen { kept, mirrored }
}

/// The `/tmp` tree and the task part from the entries chosen.
fn build(walked: &Walked, chosen: &Chosen, mirrorable: &[bool], sums: &[Sums]) -> Split {
    let entries = &walked.entries;
    let kept = &chosen.kept;
    let mut covered = vec![false; entries.len()];
    let mut new_index = vec![u32::MAX; entries.len()];
    let mut split = Split {
        tree: Vec::new(),
        sources: Vec::new(),
        task: Vec::new(),
        in_deployment: Vec::new(),
        kept_entries: 0,
        kept_bytes: 0,
        saved_nanos: 0,
    };
    let mut in_task = vec![false; entries.len()];
    for (index, entry) in entries.iter().enumerate() {
        let parent = entry.parent as usize;
        covered[index] = index != 0 && (covered[parent] || kept[parent]);
        let copied = index != 0 && mirrorable[index] && chosen.mirrored[parent];
        if kept[index] || covered[index] || copied {
            in_task[index] = true;
        }
        if covered[index] {
            continue;
        }
        let mut entry = entry.clone();
        if kept[index] {
            let dir = entry.kind == EntryKind::Dir;
            entry.kind = EntryKind::Task { dir };
            entry.mode = 0o777;
            split.kept_entries += sums[index].entries;
            split.kept_bytes += sums[index].bytes;
            split.saved_nanos += sums[index].benefit();
        }
        if let EntryKind::Hardlink { target } = &mut entry.kind {
            *target = new_index[*target as usize];
        }
        entry.parent = if index == 0 { 0 } else { new_index[parent] };
        new_index[index] = split.tree.len() as u32;
        split.tree.push(entry);
        split.sources.push(walked.sources[index].clone());
    }
    split.in_deployment = in_task.clone();
    split.task = task_part(walked, in_task);
    split
}

/// The task part's entries, sorted by path: everything reached in the deployment and,
/// since it keeps the tree's layout, the directories above, as plain directories.
fn task_part(walked: &Walked, mut in_task: Vec<bool>) -> Vec<(TaskEntry, PathBuf)> {
    let entries = &walked.entries;
    for index in (1..entries.len()).rev() {
        if in_task[index] {
            in_task[entries[index].parent as usize] = true;
        }
    }
    let mut task: Vec<(TaskEntry, PathBuf)> = (1..entries.len())
        .filter(|&i| in_task[i])
        .map(|index| {
            let entry = &entries[index];
            let task_entry = TaskEntry {
                path: entry.path.clone(),
                dir: entry.kind == EntryKind::Dir,
                mode: deployed_mode(entry).unwrap_or(0o755),
                mtime: entry.mtime,
                size: entry.file_size(),
                sha256: [0; 32],
            };
            (task_entry, walked.sources[index].clone())
        })
        .collect();
    task.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldpack_bootstrap::manifest::Mtime;

    /// A walked tree from `(path, parent, mode, kind)` rows in manifest order.
    fn walked(rows: &[(&str, u32, u32, EntryKind)]) -> Walked {
        let mut entries = vec![Entry {
            path: Vec::new(),
            parent: 0,
            mode: 0o755,
            mtime: Mtime::default(),
            kind: EntryKind::Dir,
        }];
        for (path, parent, mode, kind) in rows {
            entries.push(Entry {
                path: path.as_bytes().to_vec(),
                parent: *parent,
                mode: *mode,
                mtime: Mtime::default(),
                kind: kind.clone(),
            });
        }
        Walked {
            sources: entries
                .iter()
                .map(|e| PathBuf::from(String::from_utf8_lossy(&e.path).into_owned()))
                .collect(),
            shared: vec![false; entries.len()],
            entries,
            warnings: Vec::new(),
        }
    }

    /// The task part's paths, in order.
    fn task_paths(split: &Split) -> Vec<String> {
        split
            .task
            .iter()
            .map(|(e, _)| String::from_utf8_lossy(&e.path).into_owned())
            .collect()
    }

    fn file(size: u64) -> EntryKind {
        EntryKind::File { size }
    }

    fn link(target: &str) -> EntryKind {
        EntryKind::Symlink {
            target: target.as_bytes().to_vec(),
        }
    }

    /// bin/python3 -> python3.11, lib/libpython.so -> libpython.so.1 (links keep bin
    /// and lib from being whole), lib/python3.11/{os.py, json/__init__.py}.
    fn python() -> Walked {
        walked(&[
            ("bin", 0, 0o755, EntryKind::Dir),
            ("lib", 0, 0o755, EntryKind::Dir),
            ("bin/python3", 1, 0o777, link("python3.11")),
            ("bin/python3.11", 1, 0o700, file(100)),
            ("lib/libpython.so", 2, 0o777, link("libpython.so.1")),
            ("lib/libpython.so.1", 2, 0o755, file(2 << 20)),
            ("lib/python3.11", 2, 0o755, EntryKind::Dir),
            ("lib/python3.11/json", 7, 0o755, EntryKind::Dir),
            ("lib/python3.11/os.py", 7, 0o644, file(5000)),
            ("lib/python3.11/json/__init__.py", 8, 0o644, file(300)),
        ])
    }

    fn run(walked: &Walked, budget: u64) -> Split {
        let keep_in_tmp = Globs::default();
        let rules = Rules {
            budget,
            keep_in_tmp: &keep_in_tmp,
            entrypoint: 4,
            bootstrap_len: 1000,
        };
        let heads = vec![Head::default(); walked.entries.len()];
        split(walked, &heads, &rules, |files| {
            Ok(files
                .iter()
                .map(|&i| walked.entries[i].file_size() / 4)
                .collect())
        })
        .unwrap()
    }

    fn kinds(split: &Split) -> Vec<(String, EntryKind)> {
        split
            .tree
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    e.kind.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn whole_directories_become_one_link_and_the_entrypoint_stays() {
        let split = run(&python(), 200 << 20);
        let tree = kinds(&split);
        assert!(
            tree.contains(&("lib/python3.11".into(), EntryKind::Task { dir: true })),
            "{tree:?}"
        );
        assert!(
            tree.contains(&("lib/libpython.so.1".into(), EntryKind::Task { dir: false })),
            "{tree:?}"
        );
        assert!(
            tree.contains(&("bin/python3.11".into(), file(100))),
            "{tree:?}"
        );
        assert!(
            !tree.iter().any(|(p, _)| p.starts_with("lib/python3.11/")),
            "{tree:?}"
        );
        let task = task_paths(&split);
        assert_eq!(
            task,
            [
                "lib",
                "lib/libpython.so.1",
                "lib/python3.11",
                "lib/python3.11/json",
                "lib/python3.11/json/__init__.py",
                "lib/python3.11/os.py"
            ]
        );
        // Parents point at the new indexes, in manifest order.
        for (i, e) in split.tree.iter().enumerate().skip(1) {
            assert!(
                (e.parent as usize) < i && split.tree[e.parent as usize].kind == EntryKind::Dir
            );
        }
    }

    #[test]
    fn budget_zero_keeps_nothing_and_a_tight_budget_keeps_the_best_ratio() {
        let python = python();
        assert_eq!(run(&python, 0).tree.len(), python.entries.len());
        // Room for the small directory of many entries, not for the 2 MiB library.
        let split = run(&python, 1000 + 2600 + (2 << 20) / 4 + 10_000);
        let tree = kinds(&split);
        assert!(
            tree.contains(&("lib/python3.11".into(), EntryKind::Task { dir: true })),
            "{tree:?}"
        );
        assert!(
            tree.contains(&("lib/libpython.so.1".into(), file(2 << 20))),
            "{tree:?}"
        );
    }

    #[test]
    fn a_whole_tree_is_kept_as_its_root() {
        let tree = walked(&[
            ("a", 0, 0o644, file(10)),
            ("b", 0, 0o700, EntryKind::Dir),
            ("b/run", 2, 0o700, file(10)),
        ]);
        let keep_in_tmp = Globs::default();
        let rules = Rules {
            budget: 1 << 30,
            keep_in_tmp: &keep_in_tmp,
            entrypoint: 1,
            bootstrap_len: 10,
        };
        let heads = vec![Head::default(); tree.entries.len()];
        let split = split(&tree, &heads, &rules, |_| unreachable!()).unwrap();
        assert_eq!(kinds(&split), [("".into(), EntryKind::Task { dir: true })]);
        // Owner-only modes are given to others in the deployment.
        let modes: Vec<u32> = split.task.iter().map(|(e, _)| e.mode).collect();
        assert_eq!(modes, [0o644, 0o755, 0o755]);
    }

    #[test]
    fn directories_above_a_kept_one_copy_their_small_files_into_the_task_part() {
        // npm: its bin/ holds the entrypoint and node_modules/.bin a link, so neither
        // npm nor node_modules is whole; lib/ is kept, and its modules, found at their
        // real path in the task part, require ../package.json.
        let npm = walked(&[
            ("npm", 0, 0o755, EntryKind::Dir),
            ("npm/bin", 1, 0o755, EntryKind::Dir),
            ("npm/lib", 1, 0o755, EntryKind::Dir),
            ("npm/node_modules", 1, 0o755, EntryKind::Dir),
            ("npm/package.json", 1, 0o644, file(2000)),
            ("npm/bin/npm-cli.js", 2, 0o755, file(50)),
            ("npm/lib/cli.js", 3, 0o644, file(3000)),
            ("npm/node_modules/.bin", 4, 0o755, EntryKind::Dir),
            (
                "npm/node_modules/.bin/semver",
                8,
                0o777,
                link("../semver/x.js"),
            ),
        ]);
        let keep_in_tmp = Globs::default();
        let rules = Rules {
            budget: 1 << 30,
            keep_in_tmp: &keep_in_tmp,
            entrypoint: 6,
            bootstrap_len: 10,
        };
        let heads = vec![Head::default(); npm.entries.len()];
        let split = split(&npm, &heads, &rules, |_| unreachable!()).unwrap();
        let tree = kinds(&split);
        assert!(
            tree.contains(&("npm/lib".into(), EntryKind::Task { dir: true })),
            "{tree:?}"
        );
        // Extracted as before, and copied into the task part beside the kept lib/.
        assert!(
            tree.contains(&("npm/package.json".into(), file(2000))),
            "{tree:?}"
        );
        let task = task_paths(&split);
        assert_eq!(
            task,
            ["npm", "npm/lib", "npm/lib/cli.js", "npm/package.json"]
        );
    }

    #[test]
    fn a_tree_that_fits_at_its_full_size_is_kept_whole_however_tight() {
        // Chromium's tree at --task-budget 240MB: the budget is far from twice the tree.
        let tree = walked(&[
            ("chromium", 0, 0o700, file(100_000)),
            ("lib", 0, 0o755, EntryKind::Dir),
            ("lib/libnss3.so", 2, 0o755, file(5_000)),
        ]);
        let keep_in_tmp = Globs::default();
        let all_raw = 10 + 105_000 + 4 * INDEX_BYTES;
        for (budget, whole) in [(all_raw, true), (all_raw - 1, false)] {
            let rules = Rules {
                budget,
                keep_in_tmp: &keep_in_tmp,
                entrypoint: 1,
                bootstrap_len: 10,
            };
            let heads = vec![Head::default(); tree.entries.len()];
            let split = split(&tree, &heads, &rules, |files| {
                Ok(files
                    .iter()
                    .map(|&i| tree.entries[i].file_size() / 2)
                    .collect())
            })
            .unwrap();
            let root_kept = kinds(&split) == [("".into(), EntryKind::Task { dir: true })];
            assert_eq!(root_kept, whole, "budget {budget}: {:?}", kinds(&split));
        }
    }

    #[test]
    fn odd_modes_hardlinks_and_keep_in_tmp_are_not_kept() {
        let mut tree = walked(&[
            ("a", 0, 0o755, EntryKind::Dir),
            ("b", 0, 0o755, EntryKind::Dir),
            ("c", 0, 0o755, EntryKind::Dir),
            ("a/x", 1, 0o600, file(10)),
            // "e" is empty: nothing says Lambda makes an empty directory.
            ("b/y", 2, 0o644, file(10)),
            ("c/z", 3, 0o644, file(10)),
            ("d", 0, 0o644, file(10)),
            ("e", 0, 0o755, EntryKind::Dir),
        ]);
        tree.shared[5] = true;
        let keep_in_tmp = Globs::new(&["c".into()], "--keep-in-tmp").unwrap();
        let rules = Rules {
            budget: 1 << 30,
            keep_in_tmp: &keep_in_tmp,
            entrypoint: 7,
            bootstrap_len: 10,
        };
        let heads = vec![Head::default(); tree.entries.len()];
        let split = split(&tree, &heads, &rules, |_| unreachable!()).unwrap();
        assert!(split.task.is_empty(), "{:?}", kinds(&split));
    }
}
