#!/usr/bin/env python3
"""Describe a tree, or check that an extracted tree matches the corpus it came from.

A benchmark of an extractor that writes the wrong tree measures nothing, so every
extractor's output is compared with its corpus once per run, outside the timed runs:
entry types, permission bits, sizes, mtimes (whole seconds: tar keeps no more),
symlink targets and file contents.

    treecheck.py stats DIR               -> JSON: entries, files, dirs, symlinks, bytes
    treecheck.py compare EXPECTED ACTUAL -> JSON: ok, differences (first few)
"""

import hashlib
import json
import os
import stat
import sys


def describe(root):
    """path -> (type, mode, size, mtime, link target or content hash)."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            mtime = int(st.st_mtime)
            if stat.S_ISLNK(st.st_mode):
                # Symlink modes and mtimes are not portable; only the target matters.
                entries[rel] = ("symlink", None, None, None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", mode, None, mtime, None)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                entries[rel] = ("file", mode, st.st_size, mtime, digest.hexdigest())
            else:
                entries[rel] = ("other", mode, None, None, None)
    return entries


def stats(root):
    counts = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            counts["entries"] += 1
            if stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
            elif stat.S_ISDIR(st.st_mode):
                counts["dirs"] += 1
            elif stat.S_ISREG(st.st_mode):
                counts["files"] += 1
                counts["bytes"] += st.st_size
    return counts


def compare(expected_root, actual_root):
    expected, actual = describe(expected_root), describe(actual_root)
    differences = []
    for rel in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(rel), actual.get(rel)
        if want == got:
            continue
        if got is None:
            differences.append(f"missing: {rel}")
        elif want is None:
            differences.append(f"unexpected: {rel}")
        else:
            fields = ("type", "mode", "size", "mtime", "content")
            what = [f"{f} {w!r} != {g!r}" for f, w, g in zip(fields, want, got) if w != g]
            differences.append(f"differs: {rel}: {'; '.join(what)}")
    return {"ok": not differences, "entries": len(expected),
            "differences": len(differences), "first": differences[:5]}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "stats":
        print(json.dumps(stats(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
