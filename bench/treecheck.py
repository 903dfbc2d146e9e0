#!/usr/bin/env python3
"""Describe a tree, or check that an extracted tree matches the corpus it came from.

A benchmark of an extractor that writes the wrong tree measures nothing, so every
extractor's output is compared with its corpus once per run, outside the timed runs:
entry types, permission bits, sizes, mtimes (whole seconds: tar keeps no more),
symlink targets and file contents.

    treecheck.py stats DIR               -> JSON: entries, files, dirs, symlinks, bytes
    treecheck.py compare EXPECTED ACTUAL [--task DIR] -> JSON: ok, differences (first few)

With --task, ACTUAL is a tree packed with a task part in DIR (or DIR itself, when the
whole tree was kept): a link into DIR is compared as what the runtime reaches through
it, and what it reaches there has the mode Lambda's deployment gives (0755 for
directories and for files their owner may run, 0644 for the other files).
"""

import hashlib
import json
import os
import stat
import sys


def describe(root, task=None):
    """path -> (type, mode, size, mtime, link target or content hash), and the set of
    paths reached through the task part (links into `task` are followed)."""
    task = os.path.realpath(task) if task else None
    entries, via_task = {}, set()

    def in_task(path):
        return task is not None and (path == task or path.startswith(task + os.sep))

    def add(path, rel, through_task):
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        mtime = int(st.st_mtime)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if os.path.isabs(target) and in_task(os.path.realpath(target)):
                add(os.path.realpath(target), rel, True)
                return
            # Symlink modes and mtimes are not portable; only the target matters.
            entries[rel] = ("symlink", None, None, None, target)
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = ("dir", mode, None, mtime, None)
            for name in sorted(os.listdir(path)):
                add(os.path.join(path, name), os.path.join(rel, name), through_task)
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            entries[rel] = ("file", mode, st.st_size, mtime, digest.hexdigest())
        else:
            entries[rel] = ("other", mode, None, None, None)
        if through_task:
            via_task.add(rel)

    for name in sorted(os.listdir(root)):
        add(os.path.join(root, name), name, in_task(os.path.realpath(root)))
    return entries, via_task


def deployed(entry):
    """An entry as the deployment holds it: directories 0755, files 0755 or 0644."""
    kind, mode, *rest = entry
    if kind == "dir":
        return (kind, 0o755, *rest)
    if kind == "file":
        return (kind, 0o755 if mode & 0o100 else 0o644, *rest)
    return entry


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


def compare(expected_root, actual_root, task=None):
    expected, _ = describe(expected_root)
    actual, via_task = describe(actual_root, task)
    differences = []
    for rel in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(rel), actual.get(rel)
        if want is not None and rel in via_task:
            want = deployed(want)
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
    elif len(sys.argv) == 6 and sys.argv[1] == "compare" and sys.argv[4] == "--task":
        print(json.dumps(compare(sys.argv[2], sys.argv[3], sys.argv[5])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
