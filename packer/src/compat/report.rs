//! The check's findings in words: each says what fails, why, and what to do. Errors
//! name every problem of what the entrypoint loads at start; warnings group the rest
//! by kind, worst first, with counts.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::budget::counted;
use crate::image::version_name;
use crate::lint::{listed, text};

use super::tree::{file_name, parent};
use super::{Checker, Problem};

/// Libraries that the tree has in one directory but no search path reaches, and the
/// objects that need them.
#[derive(Default)]
struct Unreached<'a> {
    libraries: Vec<&'a [u8]>,
    users: Vec<usize>,
}

impl Checker<'_> {
    /// One line per problem of the objects loaded at start, in load order; libraries
    /// the tree has off the search path are told once per directory.
    pub(super) fn errors(&self, at_start: &[(usize, Vec<Problem>)]) -> Vec<String> {
        let mut unreached: BTreeMap<&[u8], Unreached> = BTreeMap::new();
        let mut lines = Vec::new();
        for (index, problems) in at_start {
            for problem in problems {
                match problem {
                    Problem::Missing {
                        library,
                        unreached: Some(copy),
                    } => {
                        let group = unreached.entry(parent(self.tree.path(*copy))).or_default();
                        if !group.libraries.contains(&library.as_slice()) {
                            group.libraries.push(library);
                        }
                        if !group.users.contains(index) {
                            group.users.push(*index);
                        }
                    }
                    _ => lines.push(self.describe(*index, problem)),
                }
            }
        }
        let mut first: Vec<String> = unreached
            .into_iter()
            .map(|(dir, group)| self.unreached(dir, &group))
            .collect();
        first.extend(lines);
        first
    }

    /// Libraries the tree has in `dir` that no search path reaches.
    fn unreached(&self, dir: &[u8], group: &Unreached) -> String {
        let names: Vec<String> = group.libraries.iter().map(|l| text(l)).collect();
        let needed_by: Vec<String> = group
            .users
            .iter()
            .map(|&i| text(self.tree.path(i)))
            .collect();
        let mut why: Vec<String> = Vec::new();
        for &user in &group.users {
            for line in self.outside_described(user) {
                if !why.contains(&line) {
                    why.push(line);
                }
            }
        }
        let shown_dir = if dir.is_empty() {
            "the tree's root".to_string()
        } else {
            format!("{}/", text(dir))
        };
        let env_dir = if dir.is_empty() {
            String::new()
        } else {
            format!("/{}", text(dir))
        };
        format!(
            "{} {} in {shown_dir} but on no search path on {} (needed by {}{}): record --env 'LD_LIBRARY_PATH={{root}}{env_dir}', or relink with an $ORIGIN-relative RUNPATH",
            listed(&names),
            if names.len() == 1 { "is" } else { "are" },
            self.image.runtime.as_str(),
            listed(&needed_by),
            why.iter().map(|w| format!("; {w}")).collect::<String>()
        )
    }

    /// One problem of the object at `index`, with what to do about it.
    fn describe(&self, index: usize, problem: &Problem) -> String {
        let object = text(self.tree.path(index));
        let runtime = self.image.runtime.as_str();
        match problem {
            Problem::TooNew {
                library,
                version,
                shadowed,
            } => {
                let (family, have) = self.image.lacks(version).unwrap_or_default();
                let mut line = format!(
                    "{object} needs {} from {}, but {runtime} has {} {have}: {}",
                    text(version),
                    text(library),
                    family_name(family),
                    fix_for(family, runtime)
                );
                if let Some(copy) = shadowed {
                    let copy = self.tree.path(*copy);
                    line.push_str(&format!(
                        " (the tree's {} is not used: the image's comes first on the search path; --env 'LD_LIBRARY_PATH={{root}}/{}' puts it first)",
                        text(copy),
                        text(parent(copy))
                    ));
                }
                line
            }
            Problem::Missing { library, .. } => {
                let mut line = format!(
                    "{object} needs {}, which is neither in the tree nor in {runtime}",
                    text(library)
                );
                if let Some(here) = self.found_outside(index, library) {
                    line.push_str(&format!(" (this machine has it in {here}, outside the tree)"));
                }
                line.push_str(": add it to the tree and record --env 'LD_LIBRARY_PATH={root}/DIR' for the directory that holds it");
                line
            }
            Problem::Interpreter(loader) => format!(
                "{object} asks for the dynamic loader {}, which {runtime} does not have ({}): build it for a standard glibc system",
                text(loader),
                self.image.loaders.join(", ")
            ),
            Problem::Unreadable(reason) => {
                format!("{object} is not a readable ELF object: {reason}")
            }
        }
    }

    /// The object's RUNPATH or RPATH directory outside the tree that has `library`
    /// on this machine: where it comes from here.
    fn found_outside(&self, index: usize, library: &[u8]) -> Option<String> {
        let object = self.tree.object(index)?;
        self.outside(index, object)
            .into_iter()
            .map(|(_, dir)| text(dir))
            .find(|dir| Path::new(dir).join(OsStr::from_bytes(library)).exists())
    }

    /// The object's RUNPATH and RPATH directories outside the tree, described.
    fn outside_described(&self, index: usize) -> Vec<String> {
        let Some(object) = self.tree.object(index) else {
            return Vec::new();
        };
        self.outside(index, object)
            .into_iter()
            .map(|(tag, dir)| {
                let own = self
                    .own(dir)
                    .map(|rel| format!(", this tree's own {rel} at its build location"))
                    .unwrap_or_default();
                format!(
                    "{} has {tag} {}, outside the tree{own}",
                    text(self.tree.path(index)),
                    text(dir)
                )
            })
            .collect()
    }

    /// `lib/` when `dir` is the runtime directory's `lib` on this machine.
    fn own(&self, dir: &[u8]) -> Option<String> {
        let rest = dir.strip_prefix(self.root)?;
        match rest.strip_prefix(b"/") {
            Some(rel) => Some(format!("{}/", text(rel))),
            None if rest.is_empty() => Some("root".into()),
            None => None,
        }
    }

    /// Problems of objects loaded later (or never), grouped by kind, worst first.
    pub(super) fn grouped(&self, problems: &[(usize, Problem)]) -> Vec<String> {
        let path = |index: usize| text(self.tree.path(index));
        let mut too_new: Vec<(Vec<u32>, String)> = Vec::new();
        let mut missing: BTreeMap<&[u8], Vec<String>> = BTreeMap::new();
        let mut interpreters = Vec::new();
        let mut unreadable = Vec::new();
        for (index, problem) in problems {
            match problem {
                Problem::TooNew { version, .. } => {
                    let numbers = version_name(version).map(|(_, n)| n).unwrap_or_default();
                    too_new.push((numbers, format!("{} ({})", path(*index), text(version))));
                }
                Problem::Missing { library, .. } => {
                    missing.entry(library).or_default().push(path(*index))
                }
                Problem::Interpreter(loader) => {
                    interpreters.push(format!("{} ({})", path(*index), text(loader)))
                }
                Problem::Unreadable(reason) => {
                    unreadable.push(format!("{} ({reason})", path(*index)))
                }
            }
        }
        let runtime = self.image.runtime.as_str();
        let mut warnings = Vec::new();
        if !too_new.is_empty() {
            too_new.sort_by(|a, b| b.cmp(a));
            let named: Vec<String> = too_new.into_iter().map(|(_, s)| s).collect();
            warnings.push(format!(
                "{} symbol versions newer than {runtime} has, and will fail to load there: {}; build on the image or with a manylinux2014-class toolchain",
                counted(named.len(), "ELF object needs", "ELF objects need"),
                listed(&named)
            ));
        }
        warnings.extend(self.missing_warning(missing));
        if !interpreters.is_empty() {
            warnings.push(format!(
                "{} a dynamic loader that {runtime} does not have: {}",
                counted(
                    interpreters.len(),
                    "ELF program asks for",
                    "ELF programs ask for"
                ),
                listed(&interpreters)
            ));
        }
        if !unreadable.is_empty() {
            warnings.push(format!(
                "{} not readable as ELF objects, so they were not checked: {}",
                counted(unreadable.len(), "file is", "files are"),
                listed(&unreadable)
            ));
        }
        warnings
    }

    /// Libraries found nowhere on Lambda, the most needed first.
    fn missing_warning(&self, missing: BTreeMap<&[u8], Vec<String>>) -> Option<String> {
        if missing.is_empty() {
            return None;
        }
        let objects: usize = missing.values().map(Vec::len).sum();
        let mut by_count: Vec<(&[u8], Vec<String>)> = missing.into_iter().collect();
        by_count.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        let named: Vec<String> = by_count
            .iter()
            .map(|(library, users)| {
                let copy = self
                    .tree
                    .named(library)
                    .first()
                    .map(|&c| {
                        format!(
                            "the tree has {}, off the search path; ",
                            text(self.tree.path(c))
                        )
                    })
                    .unwrap_or_default();
                format!("{} ({copy}needed by {})", text(library), listed(users))
            })
            .collect();
        Some(format!(
            "{} libraries that {} cannot find, and will fail to load there: {}",
            counted(objects, "ELF object needs", "ELF objects need"),
            self.image.runtime.as_str(),
            listed(&named)
        ))
    }

    /// The RUNPATH and RPATH directories outside the tree, the most used first.
    pub(super) fn outside_warning(
        &self,
        outside: &BTreeMap<Vec<u8>, Vec<usize>>,
    ) -> Option<String> {
        if outside.is_empty() {
            return None;
        }
        let objects: HashSet<usize> = outside.values().flatten().copied().collect();
        let mut dirs: Vec<(&Vec<u8>, &Vec<usize>)> = outside.iter().collect();
        dirs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        let named: Vec<String> = dirs
            .iter()
            .map(|(dir, users)| {
                let own = self
                    .own(dir)
                    .map(|rel| format!(", this tree's own {rel} at its build location"))
                    .unwrap_or_default();
                let example = users.first().map(|&u| text(file_name(self.tree.path(u))));
                format!(
                    "{} ({}{own}; e.g. {})",
                    text(dir),
                    counted(users.len(), "object", "objects"),
                    example.unwrap_or_default()
                )
            })
            .collect();
        Some(format!(
            "{} RUNPATH or RPATH directories outside the tree, which do not exist on Lambda (`coldpack run` hides them too): {}",
            counted(objects.len(), "ELF object names", "ELF objects name"),
            listed(&named)
        ))
    }
}

fn family_name(family: &str) -> &str {
    match family {
        "GLIBC" => "glibc",
        "GLIBCXX" | "CXXABI" => "libstdc++",
        "GCC" => "libgcc",
        other => other,
    }
}

/// What to do about a symbol version the image lacks.
fn fix_for(family: &str, runtime: &str) -> String {
    let image = runtime.replace("provided.", "public.ecr.aws/lambda/provided:");
    match family {
        "GLIBC" => format!(
            "build it on the image ({image}) or with a manylinux2014-class toolchain (glibc 2.17), or take a relocatable build made that way (for Python: python-build-standalone)"
        ),
        _ => format!(
            "build it on the image ({image}), or ship the libstdc++ and libgcc_s it was built with in the tree and put their directory first with --env 'LD_LIBRARY_PATH={{root}}/DIR'"
        ),
    }
}
