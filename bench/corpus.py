#!/usr/bin/env python3
"""Build the benchmark's corpora: seeded, deterministic trees that compress like real ones.

Generated content is never zeros or random noise: it is sliced from real files on this
machine (text from /usr/share and /usr/lib, machine code from ELF files), because
zstd's speed and ratio, and so the whole benchmark, depend on what the bytes look like.
The same seed on the same machine gives the same tree, byte for byte, with the same
modes and mtimes, so that coldpack's payload (and its hash) is the same from run to run.

    corpus.py python DEST --prefix DIR [--quick]
    corpus.py small  DEST --seed N [--quick]
    corpus.py big    DEST --seed N [--quick]
    corpus.py chromium DEST --npm DIR

chromium is not generated: it is the tree @sparticuz/chromium extracts (its
`executablePath()`, run by DIR/sparticuz-inflate.mjs next to the installed package,
as on a Node.js 20 Lambda), with every mtime set to one fixed time.

DEST must not exist; the tree is built next to it and renamed into place last, so an
interrupted build never leaves something that looks complete. Every tree gets the
timing entrypoint at bin/true-entry (copied from --entry).
"""

import argparse
import os
import random
import shutil
import subprocess
import sys

# Fixed mtimes keep generated trees (and so their payload hashes) reproducible.
EPOCH = 1_700_000_000
COMPRESSED_EXT = (
    ".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip", ".jar", ".whl", ".png", ".jpg",
    ".jpeg", ".gif", ".ico", ".woff", ".woff2", ".ttf", ".otf", ".pyc", ".deb",
)
# What `python` leaves out of the interpreter tree, as the issue specifies.
PYTHON_EXCLUDES = ("test", "tests", "__pycache__")


def fail(msg):
    print(f"corpus.py: {msg}", file=sys.stderr)
    sys.exit(1)


def walk_sorted(roots):
    """Regular files under roots, in a stable order, without following symlinks."""
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                yield path


def build_pools(min_size):
    """Split real files into a text pool and an ELF pool, each a list of (path, size)."""
    text, elf = [], []
    for path in walk_sorted(["/usr/lib", "/usr/share"]):
        if path.lower().endswith(COMPRESSED_EXT):
            continue
        try:
            size = os.path.getsize(path)
            if size < min_size:
                continue
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if head.startswith(b"\x7fELF"):
            elf.append((path, size))
        elif b"\0" not in head:
            text.append((path, size))
    if len(text) < 100 or len(elf) < 20:
        fail(f"too few source files in /usr/lib and /usr/share (text {len(text)}, ELF {len(elf)})")
    return text, elf


def read_slice(pool, rng, length):
    """length real bytes: contiguous slices of randomly chosen pool files."""
    out = bytearray()
    while len(out) < length:
        path, size = pool[rng.randrange(len(pool))]
        want = min(length - len(out), size)
        offset = rng.randrange(size - want + 1)
        with open(path, "rb") as f:
            f.seek(offset)
            out += f.read(want)
    return bytes(out)


def load_subpool(pool, rng, cap, max_file):
    """Whole files picked at random from pool until cap bytes, read into memory.

    Reading a few hundred files sequentially is much faster than thousands of small
    random reads across all of /usr on a cold page cache.
    """
    order = list(range(len(pool)))
    rng.shuffle(order)
    chosen, total = [], 0
    for index in order:
        path, size = pool[index]
        if size > max_file:
            continue
        with open(path, "rb") as f:
            data = f.read()
        chosen.append(data)
        total += len(data)
        if total >= cap:
            break
    return chosen


def slice_memory(subpool, rng, length):
    """Like read_slice, from files already in memory."""
    out = bytearray()
    while len(out) < length:
        data = subpool[rng.randrange(len(subpool))]
        want = min(length - len(out), len(data))
        offset = rng.randrange(len(data) - want + 1)
        out += data[offset:offset + want]
    return bytes(out)


def log_uniform(rng, lo, hi):
    return int(round(lo * (hi / lo) ** rng.random()))


def finish(tmp, dest, entry):
    """Add the entrypoint, pin the root's mtime, then publish tmp as dest."""
    bin_dir = os.path.join(tmp, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, "true-entry")
    shutil.copyfile(entry, target)
    os.chmod(target, 0o755)
    os.utime(target, (EPOCH, EPOCH))
    os.utime(bin_dir, (EPOCH, EPOCH))
    os.utime(tmp, (EPOCH, EPOCH))
    os.rename(tmp, dest)


def write_file(path, data, mode, mtime):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def set_dir_times(root, mtime):
    """Directories last and deepest first, so writing a child does not bump its parent."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda t: -t[0].count(os.sep)):
        os.utime(dirpath, (mtime, mtime))


def build_python(tmp, prefix, quick):
    """The interpreter tree, copied with tar so symlinks, hardlinks and modes survive."""
    if not os.path.isdir(prefix):
        fail(f"python prefix {prefix} is not a directory")
    excludes = [f"--exclude={name}" for name in PYTHON_EXCLUDES]
    members = ["."]
    if quick:
        # Pure-Python stdlib only: ~1,000 entries, ~32 MB.
        excludes += ["--exclude=./lib/python3*/site-packages", "--exclude=./lib/python3*/config-*"]
        members = [os.path.relpath(p, prefix) for p in sorted(
            os.path.join(prefix, "lib", d) for d in os.listdir(os.path.join(prefix, "lib"))
            if d.startswith("python3"))]
        members = ["./" + m for m in members]
        if not members:
            fail(f"no lib/python3* under {prefix}")
    os.makedirs(tmp)
    pack = subprocess.Popen(["tar", "-C", prefix, *excludes, "-cf", "-", *members],
                            stdout=subprocess.PIPE)
    unpack = subprocess.run(["tar", "-C", tmp, "--no-same-owner", "-xf", "-"], stdin=pack.stdout)
    pack.stdout.close()
    if pack.wait() != 0 or unpack.returncode != 0:
        fail(f"copying {prefix} failed")


def build_small(tmp, seed, quick):
    """Many small files laid out like node_modules: packages with nested dirs and .bin links."""
    rng = random.Random(seed)
    text_pool, elf_pool = build_pools(min_size=512)
    # Pools several times the corpus's size, so slices rarely repeat each other.
    text_pool = load_subpool(text_pool, rng, cap=(128 if quick else 320) << 20, max_file=4 << 20)
    elf_pool = load_subpool(elf_pool, rng, cap=(64 if quick else 160) << 20, max_file=16 << 20)
    files = 3_000 if quick else 20_000
    per_package = 50
    text_ext = [".js", ".py", ".json", ".md", ".ts", ".txt", ".css", ".html"]
    bin_ext = [".so", ".node", ".bin", ".dat", ".wasm"]
    subdirs = ["", "lib", "dist", "src", "lib/util", "dist/esm", "src/internal/core"]
    os.makedirs(os.path.join(tmp, "node_modules", ".bin"))
    for i in range(files):
        package = f"pkg-{i // per_package:04d}"
        sub = subdirs[rng.randrange(len(subdirs))]
        directory = os.path.join(tmp, "node_modules", package, sub)
        os.makedirs(directory, exist_ok=True)
        size = log_uniform(rng, 512, 20 * 1024)
        mtime = EPOCH + rng.randrange(86_400 * 365)
        if rng.random() < 0.7:
            name = f"f{i:05d}{text_ext[rng.randrange(len(text_ext))]}"
            data, mode = slice_memory(text_pool, rng, size), 0o644
        else:
            name = f"f{i:05d}{bin_ext[rng.randrange(len(bin_ext))]}"
            data = slice_memory(elf_pool, rng, size)
            mode = 0o755 if rng.random() < 0.1 else 0o644
        path = os.path.join(directory, name)
        write_file(path, data, mode, mtime)
        if i % per_package == 0:
            # One launcher per package, as npm makes them.
            link = os.path.join(tmp, "node_modules", ".bin", package)
            os.symlink(os.path.relpath(path, os.path.dirname(link)), link)
    set_dir_times(tmp, EPOCH)


def build_big(tmp, seed, quick):
    """One binary over 200 MB (like Chromium's) plus a few small files beside it.

    The big file is a sequence of slices of real ELF files, each XORed with its own byte:
    XOR with a constant keeps the slice's internal redundancy (and so its compression
    ratio) while stopping zstd from matching one slice against an earlier copy of the
    same source file, which would make the file compress better than a real binary.
    """
    rng = random.Random(seed)
    text_pool, elf_pool = build_pools(min_size=64 * 1024)
    size = (48 if quick else 230) * 1_000_000
    app = os.path.join(tmp, "app")
    os.makedirs(os.path.join(app, "locales"))
    big = os.path.join(app, "chrome")
    written = 0
    with open(big, "wb") as f:
        while written < size:
            length = min(size - written, log_uniform(rng, 256 * 1024, 4 * 1024 * 1024))
            chunk = read_slice(elf_pool, rng, length)
            key = rng.randrange(256)
            if key:
                table = bytes(b ^ key for b in range(256))
                chunk = chunk.translate(table)
            f.write(chunk)
            written += len(chunk)
    os.chmod(big, 0o755)
    os.utime(big, (EPOCH, EPOCH))
    for i in range(10):
        data = read_slice(elf_pool, rng, log_uniform(rng, 50_000, 300_000))
        write_file(os.path.join(app, "locales", f"l{i:02d}.pak"), data, 0o644, EPOCH + i)
    for name in ("resources.json", "LICENSE", "version.txt"):
        data = read_slice(text_pool, rng, log_uniform(rng, 200, 60_000))
        write_file(os.path.join(app, name), data, 0o644, EPOCH)
    os.symlink("chrome", os.path.join(app, "chrome-wrapper"))
    set_dir_times(tmp, EPOCH)


def build_chromium(tmp, npm_dir):
    """The tree @sparticuz/chromium's executablePath() extracts into an empty $TMPDIR.

    AWS_EXECUTION_ENV makes the package take Lambda's Node.js 20 path (it then also
    extracts al2023/, the libraries Amazon Linux 2023 lacks), so the tree is the one a
    function would get. The package writes the browser with mode 0700 and keeps its
    tars' mtimes; the mode is left as it writes it, the mtimes are pinned so that the
    payload's hash does not change from one build to the next.
    """
    script = os.path.join(npm_dir, "sparticuz-inflate.mjs")
    if not os.path.isfile(script):
        fail(f"{script} is missing (bench/run installs the package and copies it there)")
    os.makedirs(tmp)
    env = dict(os.environ, TMPDIR=tmp, AWS_EXECUTION_ENV="AWS_Lambda_nodejs20.x")
    old_umask = os.umask(0o022)
    try:
        done = subprocess.run(["node", script], env=env, cwd=npm_dir)
    finally:
        os.umask(old_umask)
    if done.returncode != 0 or not os.path.isfile(os.path.join(tmp, "chromium")):
        fail("@sparticuz/chromium's executablePath() did not extract the tree")
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    set_dir_times(tmp, EPOCH)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["python", "small", "big", "chromium"])
    parser.add_argument("dest")
    parser.add_argument("--entry", required=True, help="executable copied to bin/true-entry")
    parser.add_argument("--prefix", help="interpreter prefix (kind python)")
    parser.add_argument("--npm", help="where @sparticuz/chromium is installed (kind chromium)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="smaller corpus for smoke runs")
    args = parser.parse_args()
    if os.path.lexists(args.dest):
        fail(f"{args.dest} already exists")
    tmp = f"{args.dest}.partial"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    if args.kind == "python":
        if not args.prefix:
            fail("python needs --prefix")
        build_python(tmp, args.prefix, args.quick)
    elif args.kind == "chromium":
        if not args.npm:
            fail("chromium needs --npm")
        build_chromium(tmp, args.npm)
    elif args.kind == "small":
        os.makedirs(tmp)
        build_small(tmp, args.seed, args.quick)
    else:
        os.makedirs(tmp)
        build_big(tmp, args.seed, args.quick)
    finish(tmp, args.dest, args.entry)


if __name__ == "__main__":
    main()
