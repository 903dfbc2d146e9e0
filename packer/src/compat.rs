//! Will it run on Lambda? The tree's ELF objects checked against the image the
//! function runs on ([`crate::image`]), at pack time, where a failure would otherwise
//! show only in the cloud: a `GLIBC_2.35` that `provided.al2023` (glibc 2.34) lacks, a
//! library found here only through a `RUNPATH` that names the build machine, a library
//! that is neither in the tree nor in the image.
//!
//! Libraries are looked for as glibc's loader does (ld.so(8)): the object's `DT_RPATH`
//! (and the executable's) when it has no `DT_RUNPATH`, then `LD_LIBRARY_PATH`, then
//! its `DT_RUNPATH`, then the image's own directories; a name already loaded is not
//! looked for again. `$ORIGIN` and `{root}` resolve inside the tree; any other
//! absolute directory is taken to be absent on Lambda, except the image's `/lib64`
//! and `/usr/lib64`. `LD_LIBRARY_PATH` is the one recorded with `--env`, else Lambda's
//! own, which puts the image's directories first: an image library then wins over
//! the tree's copy of it.
//!
//! What the entrypoint loads at start (its `DT_NEEDED` closure) must load: a problem
//! there is an error. Every other object (a Python extension, a program started later)
//! only gets warnings, grouped, since it fails only when something loads it. Symbol
//! versions are checked for the families the image data knows (glibc, libstdc++,
//! libgcc); other libraries' versions are not.

mod report;
mod tree;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use coldpack_bootstrap::manifest::{Entry, EntryKind};

use crate::cli::{Arch, Runtime};
use crate::elf::Object;
use crate::image::{version_name, Image};
use crate::lint::Elf;
use crate::resolve::climbs_out;
use tree::{parent, Tree};

/// Lambda's `LD_LIBRARY_PATH` for OS-only runtimes, which the runtime inherits unless
/// `--env` records another
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>).
const LAMBDA_LD_LIBRARY_PATH: &[u8] =
    b"/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib";
/// The directories the image's loader searches on its own.
const IMAGE_DIRS: &[&[u8]] = &[b"/lib64", b"/usr/lib64"];

/// One entry of the tree, as this check needs it: a small type of its own, built by
/// [`tree_from_walk`], so that the manifest's types can change without it.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// Relative to the tree's root, `/`-separated; empty for the root.
    pub path: Vec<u8>,
    /// Where to read a file's contents.
    pub source: PathBuf,
    pub kind: Kind,
    /// A file whose first bytes are an ELF header (as `head` read them): the only
    /// files worth reading as objects.
    pub elf: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
}

/// The walked tree as this check reads it, with the ELF headers `head::read_heads`
/// found in it; a hardlink is a file like any other.
pub fn tree_from_walk(
    entries: &[Entry],
    sources: &[PathBuf],
    elf: &[Option<Elf>],
) -> Vec<TreeEntry> {
    let elf = |index: usize| elf[index].is_some();
    entries
        .iter()
        .zip(sources)
        .enumerate()
        .map(|(index, (entry, source))| TreeEntry {
            path: entry.path.clone(),
            source: source.clone(),
            elf: match &entry.kind {
                EntryKind::File { .. } => elf(index),
                EntryKind::Hardlink { target } => elf(*target as usize),
                // Kept in the task part, not read by `head`: read it to be sure.
                EntryKind::Task { dir: false } => true,
                _ => false,
            },
            kind: match &entry.kind {
                EntryKind::Dir | EntryKind::Task { dir: true } => Kind::Dir,
                EntryKind::Symlink { target } => Kind::Symlink(target.clone()),
                EntryKind::File { .. }
                | EntryKind::Hardlink { .. }
                | EntryKind::Task { dir: false } => Kind::File,
            },
        })
        .collect()
}

/// What the check needs besides the tree.
pub struct Target<'a> {
    /// The runtime directory on this machine: a `RUNPATH` into it names the tree's
    /// own directory at its build location.
    pub root: &'a Path,
    /// The file the entrypoint resolves to, as a path inside the tree.
    pub entrypoint: &'a [u8],
    /// The recorded `--env` pairs (for `LD_LIBRARY_PATH`).
    pub env: &'a [(Vec<u8>, Vec<u8>)],
    pub runtime: Runtime,
    pub arch: Arch,
}

/// What the check found: errors (the entrypoint cannot start) and grouped warnings.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Findings {
    /// The one line `pack` refuses with.
    pub fn refusal(&self, target: &Target) -> String {
        format!(
            "{} cannot start on {}: {} (--allow-incompatible to pack it anyway)",
            String::from_utf8_lossy(target.entrypoint),
            target.runtime.as_str(),
            self.errors.join("; ")
        )
    }

    /// Everything as warnings, for `--allow-incompatible`.
    pub fn into_warnings(self) -> Vec<String> {
        let mut all: Vec<String> = self
            .errors
            .into_iter()
            .map(|e| format!("{e} (packed anyway: --allow-incompatible)"))
            .collect();
        all.extend(self.warnings);
        all
    }
}

/// Checks every ELF object of the tree built for `target.arch` against its image.
pub fn check(tree: &[TreeEntry], target: &Target) -> Result<Findings> {
    let image = Image::load(target.runtime, target.arch)?;
    let tree = Tree::read(tree, target.arch);
    let root = fs::canonicalize(target.root).unwrap_or_else(|_| target.root.to_owned());
    let checker = Checker {
        tree: &tree,
        image: &image,
        root: root.as_os_str().as_bytes(),
        ld_library_path: ld_library_path(target.env),
        entrypoint: tree.entry(target.entrypoint),
    };
    let (order, loaded) = checker.closure();
    let position: HashMap<usize, usize> =
        order.iter().enumerate().map(|(at, &i)| (i, at)).collect();
    let mut at_start: Vec<(usize, Vec<Problem>)> = Vec::new();
    let mut later = Vec::new();
    let mut outside: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    for (index, object) in tree.objects() {
        if let Ok(object) = object {
            for (_, dir) in checker.outside(index, object) {
                outside.entry(dir.to_vec()).or_default().push(index);
            }
        }
        let problems = checker.problems(index, object, &loaded);
        if position.contains_key(&index) {
            at_start.push((index, problems));
        } else {
            later.extend(problems.into_iter().map(|p| (index, p)));
        }
    }
    at_start.sort_by_key(|(index, _)| position.get(index).copied());
    let mut warnings = checker.grouped(&later);
    warnings.extend(checker.outside_warning(&outside));
    Ok(Findings {
        errors: checker.errors(&at_start),
        warnings,
    })
}

/// What the tree would take from this machine, which `coldpack run` hides so that the
/// tree fails there as it would on Lambda.
#[derive(Debug, Default)]
pub struct HostUse {
    /// The absolute paths outside the tree that it names: its `RUNPATH` and `RPATH`
    /// directories, and the targets of its absolute symlinks.
    pub paths: Vec<PathBuf>,
    /// Libraries its objects need that no Lambda image has and that their search
    /// path on Lambda does not reach in the tree: this machine's own copies would
    /// otherwise stand in for them.
    pub libraries: Vec<Vec<u8>>,
}

/// What the tree, started as `entrypoint` (a path in it) with the `env` pairs, would
/// take from this machine.
pub fn host_use(
    tree: &[TreeEntry],
    entrypoint: &[u8],
    env: &[(Vec<u8>, Vec<u8>)],
    arch: Arch,
) -> Result<HostUse> {
    let images = [
        Image::load(Runtime::ProvidedAl2023, arch)?,
        Image::load(Runtime::ProvidedAl2, arch)?,
    ];
    let read = Tree::read(tree, arch);
    let mut paths: Vec<&[u8]> = read
        .objects()
        .filter_map(|(_, object)| object.ok())
        .flat_map(|object| object.rpath.iter().chain(&object.runpath))
        .map(Vec::as_slice)
        .chain(tree.iter().filter_map(|entry| match &entry.kind {
            Kind::Symlink(target) => Some(target.as_slice()),
            _ => None,
        }))
        .filter(|path| path.starts_with(b"/"))
        .collect();
    paths.sort();
    paths.dedup();
    let checker = Checker {
        tree: &read,
        image: &images[0],
        root: b"",
        ld_library_path: ld_library_path(env),
        entrypoint: read.resolve(entrypoint),
    };
    let (_, loaded) = checker.closure();
    let mut libraries: Vec<Vec<u8>> = read
        .objects()
        .flat_map(|(index, object)| checker.problems(index, object, &loaded))
        .filter_map(|problem| match problem {
            Problem::Missing { library, .. } => Some(library),
            _ => None,
        })
        .filter(|library| !images.iter().any(|image| image.has_library(library)))
        .collect();
    libraries.sort();
    libraries.dedup();
    Ok(HostUse {
        paths: paths
            .into_iter()
            .map(|p| PathBuf::from(OsStr::from_bytes(p)))
            .collect(),
        libraries,
    })
}

/// `LD_LIBRARY_PATH` as the runtime will see it.
fn ld_library_path(env: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    let value = env
        .iter()
        .rev()
        .find(|(key, _)| key == b"LD_LIBRARY_PATH")
        .map_or(LAMBDA_LD_LIBRARY_PATH, |(_, value)| value.as_slice());
    value
        .split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A directory the loader searches, as it is on Lambda.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dir {
    /// A directory of the tree (`$ORIGIN/../lib`, `{root}/lib`), as a path in it;
    /// `..` may still climb out, which resolving it finds.
    Tree(Vec<u8>),
    /// The image's own library directories.
    Image,
    /// Anything else: absent on Lambda, as far as this check knows.
    Outside,
}

/// Where the loader finds a library on Lambda.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Tree(usize),
    Image,
    Missing,
}

/// What is wrong with one object.
#[derive(Debug, Clone)]
enum Problem {
    /// A symbol version newer than the image's, from a library the image provides.
    TooNew {
        library: Vec<u8>,
        version: Vec<u8>,
        /// The tree's own copy of the library, which the loader does not reach first.
        shadowed: Option<usize>,
    },
    /// A library found neither in the tree (on the search path) nor in the image.
    Missing {
        library: Vec<u8>,
        /// The tree's copy of it, off the search path.
        unreached: Option<usize>,
    },
    /// A dynamic loader the image does not have.
    Interpreter(Vec<u8>),
    Unreadable(String),
}

struct Checker<'a> {
    tree: &'a Tree<'a>,
    image: &'a Image,
    /// The runtime directory on this machine, canonical.
    root: &'a [u8],
    ld_library_path: Vec<Vec<u8>>,
    entrypoint: Option<usize>,
}

impl Checker<'_> {
    /// A search-path entry of the object at `index` as a directory on Lambda; `None`
    /// for what this check cannot know (`$LIB`, `$PLATFORM`).
    fn dir(&self, index: usize, entry: &[u8]) -> Option<Dir> {
        let origin = parent(self.tree.path(index));
        for name in [&b"$ORIGIN"[..], b"${ORIGIN}"] {
            if let Some(rest) = entry.strip_prefix(name) {
                return Some(Dir::Tree([origin, rest].concat()));
            }
        }
        (!entry.contains(&b'$')).then(|| absolute_dir(entry))
    }

    /// The directories searched for the libraries of the object at `index`, in order.
    fn search_path(&self, index: usize, object: &Object) -> Vec<Dir> {
        let mut dirs = Vec::new();
        if object.runpath.is_empty() {
            let mut rpaths = vec![(index, object)];
            // The executable's RPATH applies to what it loads, unless they have RUNPATH.
            if let Some((exe, executable)) = self
                .entrypoint
                .filter(|&e| e != index)
                .and_then(|e| Some((e, self.tree.object(e)?)))
            {
                if executable.runpath.is_empty() {
                    rpaths.push((exe, executable));
                }
            }
            for (owner, object) in rpaths {
                dirs.extend(object.rpath.iter().filter_map(|d| self.dir(owner, d)));
            }
        }
        dirs.extend(
            self.ld_library_path
                .iter()
                .map(|entry| match entry.strip_prefix(b"{root}") {
                    Some(rest) => Dir::Tree(rest.to_vec()),
                    None => absolute_dir(entry),
                }),
        );
        dirs.extend(object.runpath.iter().filter_map(|d| self.dir(index, d)));
        dirs.push(Dir::Image);
        dirs
    }

    /// Where `name` is found along `dirs` on Lambda. Like the loader, a file that is
    /// not an object for the function's machine is passed over.
    fn find(&self, name: &[u8], dirs: &[Dir]) -> Found {
        // A name with a slash is a path: no search, and only the image's is there.
        if let Some(at) = name.iter().rposition(|&b| b == b'/') {
            let (dir, file) = (&name[..at], &name[at + 1..]);
            let in_image = absolute_dir(dir) == Dir::Image && self.image.has_library(file);
            return if in_image {
                Found::Image
            } else {
                Found::Missing
            };
        }
        for dir in dirs {
            match dir {
                Dir::Tree(dir) => {
                    let path = [dir.as_slice(), b"/", name].concat();
                    let found = self.tree.resolve(&path);
                    if let Some(found) = found.filter(|&f| self.tree.object(f).is_some()) {
                        return Found::Tree(found);
                    }
                }
                Dir::Image if self.image.has_library(name) => return Found::Image,
                _ => {}
            }
        }
        Found::Missing
    }

    /// The objects the entrypoint loads at start, in the loader's breadth-first order,
    /// and where each name loaded by then was found. A library the tree has but the
    /// search path does not reach is counted in, so that its own problems show up
    /// with the first fix.
    fn closure(&self) -> (Vec<usize>, HashMap<Vec<u8>, Found>) {
        let mut order = Vec::new();
        let mut loaded: HashMap<Vec<u8>, Found> = HashMap::new();
        let Some(start) = self.entrypoint.filter(|&e| self.tree.object(e).is_some()) else {
            return (order, loaded);
        };
        let mut seen = HashSet::from([start]);
        let mut queue = VecDeque::from([start]);
        while let Some(index) = queue.pop_front() {
            order.push(index);
            let Some(object) = self.tree.object(index) else {
                continue;
            };
            let dirs = self.search_path(index, object);
            for name in &object.needed {
                let found = match loaded.get(name) {
                    Some(found) => found.clone(),
                    None => self.find(name, &dirs),
                };
                let next = match found {
                    Found::Tree(i) => Some(i),
                    Found::Missing => self.tree.named(name).first().copied(),
                    Found::Image => None,
                };
                if let Some(next) = next {
                    if seen.insert(next) {
                        queue.push_back(next);
                    }
                    if let Some(soname) = self.tree.object(next).and_then(|o| o.soname.clone()) {
                        loaded.entry(soname).or_insert_with(|| found.clone());
                    }
                }
                loaded.insert(name.clone(), found);
            }
        }
        (order, loaded)
    }

    /// One object's problems, given where the entrypoint's libraries were found.
    fn problems(
        &self,
        index: usize,
        object: Result<&Object, &String>,
        loaded: &HashMap<Vec<u8>, Found>,
    ) -> Vec<Problem> {
        let object = match object {
            Ok(object) => object,
            Err(reason) => return vec![Problem::Unreadable(reason.clone())],
        };
        let mut problems = Vec::new();
        if let Some(interpreter) = &object.interpreter {
            let known = std::str::from_utf8(interpreter)
                .is_ok_and(|i| self.image.loaders.iter().any(|l| l == i));
            if !known {
                problems.push(Problem::Interpreter(interpreter.clone()));
            }
        }
        let dirs = self.search_path(index, object);
        let mut found: HashMap<&[u8], Found> = HashMap::new();
        for name in &object.needed {
            let location = match loaded.get(name) {
                Some(location) => location.clone(),
                None => self.find(name, &dirs),
            };
            if location == Found::Missing {
                problems.push(Problem::Missing {
                    library: name.clone(),
                    unreached: self.tree.named(name).first().copied(),
                });
            }
            found.insert(name, location);
        }
        problems.extend(self.too_new(object, &found));
        problems
    }

    /// The newest symbol version of each family that the object needs from image
    /// libraries, where the image's is older.
    fn too_new(&self, object: &Object, found: &HashMap<&[u8], Found>) -> Vec<Problem> {
        let mut worst: BTreeMap<&str, (Vec<u32>, Problem)> = BTreeMap::new();
        for need in &object.version_needs {
            if found.get(need.library.as_slice()) != Some(&Found::Image) {
                continue;
            }
            for version in &need.versions {
                let (Some((family, _)), Some((_, numbers))) =
                    (self.image.lacks(version), version_name(version))
                else {
                    continue;
                };
                if worst.get(family).is_none_or(|(seen, _)| numbers > *seen) {
                    let problem = Problem::TooNew {
                        library: need.library.clone(),
                        version: version.clone(),
                        shadowed: self.tree.named(&need.library).first().copied(),
                    };
                    worst.insert(family, (numbers, problem));
                }
            }
        }
        worst.into_values().map(|(_, problem)| problem).collect()
    }

    /// The object's `RPATH` and `RUNPATH` entries that lead out of the tree, tagged.
    fn outside<'o>(&self, index: usize, object: &'o Object) -> Vec<(&'static str, &'o [u8])> {
        let tagged = object
            .rpath
            .iter()
            .map(|d| ("RPATH", d))
            .chain(object.runpath.iter().map(|d| ("RUNPATH", d)));
        tagged
            .filter(|(_, entry)| match self.dir(index, entry) {
                Some(Dir::Outside) => true,
                Some(Dir::Tree(dir)) => climbs_out(0, &dir),
                _ => false,
            })
            .map(|(tag, entry)| (tag, entry.as_slice()))
            .collect()
    }
}

/// An absolute (or cwd-relative) directory as it is on Lambda.
fn absolute_dir(entry: &[u8]) -> Dir {
    let trimmed = entry.strip_suffix(b"/").unwrap_or(entry);
    if IMAGE_DIRS.contains(&trimmed) {
        Dir::Image
    } else {
        Dir::Outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_library_path_is_the_recorded_one_else_lambdas() {
        let lambda = ld_library_path(&[]);
        assert_eq!(lambda[0], b"/var/lang/lib");
        assert_eq!(absolute_dir(&lambda[1]), Dir::Image, "/lib64 comes early");
        let recorded = [
            (b"LD_LIBRARY_PATH".to_vec(), b"/old".to_vec()),
            (
                b"LD_LIBRARY_PATH".to_vec(),
                b"{root}/lib::/usr/lib64/".to_vec(),
            ),
        ];
        assert_eq!(
            ld_library_path(&recorded),
            [b"{root}/lib".to_vec(), b"/usr/lib64/".to_vec()]
        );
        assert_eq!(absolute_dir(b"/usr/lib64/"), Dir::Image);
        assert_eq!(
            absolute_dir(b"/root/.pyenv/versions/3.11.7/lib"),
            Dir::Outside
        );
    }
}
