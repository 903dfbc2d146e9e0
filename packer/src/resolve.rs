//! Following a path through the tree's own symlinks, as the kernel will inside the
//! extracted tree, never through the build machine's filesystem.
//!
//! `bin/python3 -> /opt/py/bin/python3.12` exists on the machine that packs, so a
//! check with `canonicalize` passes, and the function fails on Lambda. Here each link
//! is read and resolved inside the tree: an absolute link, or one that climbs above
//! the tree, is an error that names it.

use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Symlinks followed before giving up, as Linux does (`ELOOP`).
const MAX_HOPS: usize = 40;

/// What a path names, as far as resolving goes.
pub enum Node {
    Dir,
    File,
    Link(Vec<u8>),
    Other,
}

/// What is at `path` inside the runtime directory `dir`, never following a link.
pub fn on_disk(dir: &Path, path: &[u8]) -> Option<Node> {
    let full = dir.join(std::ffi::OsStr::from_bytes(path));
    let meta = fs::symlink_metadata(&full).ok()?;
    Some(if meta.is_dir() {
        Node::Dir
    } else if meta.is_file() {
        Node::File
    } else if meta.file_type().is_symlink() {
        Node::Link(fs::read_link(&full).ok()?.into_os_string().into_vec())
    } else {
        Node::Other
    })
}

/// The path of the file `path` names inside the tree, with every link on the way
/// resolved inside it, or why it names none. `lookup` says what is at a path.
pub fn resolve(path: &[u8], lookup: impl Fn(&[u8]) -> Option<Node>) -> Result<Vec<u8>, String> {
    let shown = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    // The components still to walk, last first, and the directories walked so far.
    let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    let mut at: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == b".." {
            if at.pop().is_none() {
                return Err(format!("{} climbs above the tree", shown(path)));
            }
            continue;
        }
        let mut child = at.join(&b'/');
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(&part);
        match lookup(&child) {
            None => return Err(format!("{} does not exist in the tree", shown(&child))),
            Some(Node::Dir) => at.push(part),
            Some(Node::File) if todo.is_empty() => return Ok(child),
            Some(Node::Link(target)) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(format!("{} goes round in a loop of symlinks", shown(path)));
                }
                if target.starts_with(b"/") {
                    return Err(format!(
                        "symlink {} -> {} is absolute: on Lambda it points into the Lambda image, not the tree; make it relative",
                        shown(&child),
                        shown(&target)
                    ));
                }
                if climbs_out(at.len(), &target) {
                    return Err(format!(
                        "symlink {} -> {} points outside the tree",
                        shown(&child),
                        shown(&target)
                    ));
                }
                todo.extend(components(&target).rev().map(<[u8]>::to_vec));
            }
            Some(_) => return Err(format!("{} is not a directory", shown(&child))),
        }
    }
    Err(format!(
        "{} is a directory, not a regular file",
        shown(path)
    ))
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
}

/// Whether `target`, read from a directory `depth` levels below the root, climbs
/// above the root.
pub fn climbs_out(depth: usize, target: &[u8]) -> bool {
    let mut depth = depth as isize;
    for part in components(target) {
        depth += if part == b".." { -1 } else { 1 };
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree given as `(path, node)` rows.
    fn lookup<'a>(rows: &'a [(&'a str, &'a str)]) -> impl Fn(&[u8]) -> Option<Node> + 'a {
        move |path| {
            rows.iter()
                .find(|(p, _)| p.as_bytes() == path)
                .map(|(_, node)| match *node {
                    "dir" => Node::Dir,
                    "file" => Node::File,
                    target => Node::Link(target.as_bytes().to_vec()),
                })
        }
    }

    #[test]
    fn links_inside_the_tree_are_followed() {
        let rows = [
            ("bin", "dir"),
            ("bin/python", "python3"),
            ("bin/python3", "../libexec/py"),
            ("libexec", "dir"),
            ("libexec/py", "file"),
        ];
        assert_eq!(
            resolve(b"bin/python", lookup(&rows)),
            Ok(b"libexec/py".to_vec())
        );
        assert_eq!(
            resolve(b"./bin/../bin/python3", lookup(&rows)),
            Ok(b"libexec/py".to_vec())
        );
    }

    #[test]
    fn absolute_escaping_and_looping_links_are_named() {
        let rows = [
            ("bin", "dir"),
            ("bin/abs", "/opt/py/bin/python3.12"),
            ("bin/out", "../../usr/bin/python3"),
            ("bin/a", "b"),
            ("bin/b", "a"),
        ];
        let abs = resolve(b"bin/abs", lookup(&rows)).unwrap_err();
        assert!(
            abs.contains("bin/abs -> /opt/py/bin/python3.12") && abs.contains("absolute"),
            "{abs}"
        );
        let out = resolve(b"bin/out", lookup(&rows)).unwrap_err();
        assert!(
            out.contains("bin/out") && out.contains("outside the tree"),
            "{out}"
        );
        assert!(resolve(b"bin/a", lookup(&rows))
            .unwrap_err()
            .contains("loop"));
        assert!(resolve(b"bin", lookup(&rows))
            .unwrap_err()
            .contains("directory"));
        assert!(resolve(b"nope", lookup(&rows))
            .unwrap_err()
            .contains("does not exist"));
    }
}
