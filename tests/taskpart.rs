//! Code storage first (issue 10), end to end: runtimes packed with a task part and
//! started from a read-only deployment, as Lambda starts them, as root and as
//! `nobody`, each cold and then re-initialised warm; and what a deployment must hold,
//! what the budget keeps, what the zip carries, and what `verify` and `inspect` say.
//!
//! The real runtimes are this machine's: the CPython 3.11.7 tree pyenv built, Node
//! with its npm, and the tree @sparticuz/chromium extracts (the npm package, pinned and
//! installed into `.cache/chromium` by `scripts/test`). A test whose runtime is missing
//! says so and passes, except in CI (`CI=true`), where it fails: CI must run them all.
//! Each start's decision and time come from the bootstrap's JSON line; they are printed
//! (`-- --nocapture` shows them).

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use util::*;

const PYTHON_PREFIX: &str = "/root/.pyenv/versions/3.11.7";
/// Where `scripts/test` installs @sparticuz/chromium, under the repository.
const SPARTICUZ: &str = ".cache/chromium/node_modules/@sparticuz/chromium";

/// Whether what a test needs is here. Outside CI a missing piece skips the test, with
/// a line saying so; in CI it fails it.
fn present(what: &str, found: bool) -> bool {
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is missing, and CI must run this test (scripts/test installs what it can)"
        );
        println!("skipped: {what} is missing");
    }
    found
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------
// Starting from a read-only deployment

/// One start of `out/bootstrap` as `who`, `out` read-only, `cache` as `/tmp`.
fn start_deployed(
    out: &Path,
    cache: &Path,
    who: Who,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    with_read_only(out, start_command(&out.join("bootstrap"), cache, who, env))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the bootstrap")
}

/// The start's time before the exec, from its JSON line.
fn start_ms(output: &Output) -> f64 {
    log_field(&output.stderr, "ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no time in: {}", text(&output.stderr)))
}

/// The tree a start ran: the copy in `cache`, or the task part itself when direct.
fn tree_root(output: &Output, out: &Path, cache: &Path) -> PathBuf {
    let name = log_field(&output.stderr, "name").expect("a name in the log line");
    let id = log_field(&output.stderr, "payload").expect("a payload in the log line");
    let dir = if decision(output) == "direct" {
        out
    } else {
        cache
    };
    dir.join(format!("coldpack-{name}.{id}"))
}

/// Starts `out` cold, then again in the same cache (a re-init), as each of `users`,
/// each with a fresh cache and a home of its own; checks the decisions, hands each
/// start's output and tree to `check`, and prints the times. Returns each one's tree.
fn cold_then_warm(
    sandbox: &Sandbox,
    out: &Path,
    label: &str,
    users: &[Who],
    env: &[(&str, &str)],
    args: [&[&str]; 2],
    check: impl Fn(&Output, &Path),
) -> Vec<(Who, PathBuf)> {
    let direct = inspect(out)["direct"] == true;
    let expected = if direct {
        ["direct", "direct"]
    } else {
        ["extract", "reuse"]
    };
    let mut trees = Vec::new();
    for &who in users {
        let slug = label.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let cache = sandbox.cache_dir(&format!("{slug}-{who:?}-tmp"), who);
        let home = sandbox.cache_dir(&format!("{slug}-{who:?}-home"), who);
        let env = [env, &[("HOME", arg(&home))]].concat();
        let mut times = Vec::new();
        let mut root = PathBuf::new();
        for (args, expected) in args.iter().zip(expected) {
            let output = start_deployed(out, &cache, who, &env, args);
            assert!(
                output.status.success() && decision(&output) == expected,
                "{label} as {who:?}: expected {expected}, got {}\nstdout: {}\nstderr: {}",
                decision(&output),
                text(&output.stdout),
                text(&output.stderr)
            );
            root = tree_root(&output, out, &cache);
            check(&output, &root);
            times.push(start_ms(&output));
        }
        if direct {
            assert_eq!(
                names_in(&cache),
                Vec::<String>::new(),
                "direct, yet /tmp was written"
            );
        }
        println!(
            "{label} as {who:?}: {} {:.2} ms, then {} {:.2} ms",
            expected[0], times[0], expected[1], times[1]
        );
        trees.push((who, root));
    }
    trees
}

/// `coldpack inspect --json OUT`.
fn inspect(out: &Path) -> Value {
    let output = coldpack()
        .args(["inspect", "--json"])
        .arg(out)
        .output()
        .expect("run coldpack inspect");
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("inspect's JSON")
}

/// The task part `out` holds, by the name `inspect` gives it.
fn task_dir(out: &Path) -> PathBuf {
    PathBuf::from(
        inspect(out)["task_part"]["dir"]
            .as_str()
            .expect("a task part"),
    )
}

/// The task part `out` holds, checked: none at all when nothing is kept (its path
/// then names nothing), else as `assert_deployment_modes` wants it.
fn checked_task_part(out: &Path) -> PathBuf {
    let summary = inspect(out);
    let dir = PathBuf::from(summary["task_part"]["dir"].as_str().expect("a path"));
    if summary["task_part"]["entries"] == 0 {
        assert_eq!(names_in(out), ["bootstrap"], "{summary}");
    } else {
        assert_deployment_modes(&dir);
    }
    dir
}

/// What `nobody` meets in the deployment: every file 0644 or 0755 and every directory
/// 0755, so it can read and run what it needs and write nothing (when the files
/// belong to root, as they do when the tests run as root).
fn assert_deployment_modes(task_dir: &Path) {
    let owner = fs::metadata("/proc/self").unwrap().uid();
    for (path, kind) in entries_under(task_dir) {
        let full = join(task_dir, &path);
        let meta = fs::symlink_metadata(&full).unwrap();
        let mode = meta.mode() & 0o7777;
        let allowed: &[u32] = match kind {
            'd' => &[0o755],
            'f' => &[0o644, 0o755],
            _ => &[],
        };
        assert!(
            allowed.contains(&mode) && meta.uid() == owner,
            "{}: {kind} mode {mode:o} owner {}",
            full.display(),
            meta.uid()
        );
    }
}

// ---------------------------------------------------------------------------------
// What a start wrote into /tmp, and what it reaches in the deployment instead

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Every entry under `dir` (itself as the empty path), by path: `d`, `f` or `l` (a
/// link, not followed); entries named in `skip` are left out with what they hold.
fn entries_under_except(dir: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, char> {
    let mut found = BTreeMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let meta = fs::symlink_metadata(join(dir, &rel)).expect("stat while walking");
        let kind = if meta.is_dir() {
            'd'
        } else if meta.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        if kind == 'd' {
            for item in fs::read_dir(join(dir, &rel)).expect("list while walking") {
                let name = item.unwrap().file_name();
                if skip.iter().any(|s| name.as_bytes() == s.as_bytes()) {
                    continue;
                }
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                stack.push(child);
            }
        }
        found.insert(rel, kind);
    }
    found
}

fn entries_under(dir: &Path) -> BTreeMap<Vec<u8>, char> {
    entries_under_except(dir, &[])
}

/// How a start laid a tree out: entries it wrote into `/tmp` (links included), links
/// into the task part among them, and the entries those links reach.
struct Layout {
    written: usize,
    links: usize,
    reached: usize,
}

/// The tree a runtime sees at `root`, an extracted tree, with each link into the task
/// part replaced by what it reaches there; and how the start laid it out.
fn seen_through_links(root: &Path, task_dir: &Path) -> (BTreeMap<Vec<u8>, char>, Layout) {
    let written = entries_under(root);
    let mut seen = BTreeMap::new();
    let (mut links, mut reached) = (0, 0);
    for (path, kind) in &written {
        let target = (*kind == 'l')
            .then(|| fs::read_link(join(root, path)).unwrap())
            .filter(|target| target.starts_with(task_dir));
        let Some(target) = target else {
            seen.insert(path.clone(), *kind);
            continue;
        };
        links += 1;
        for (below, kind) in entries_under(&target) {
            let mut full = path.clone();
            if !below.is_empty() {
                full.push(b'/');
                full.extend_from_slice(&below);
            }
            seen.insert(full, kind);
            reached += 1;
        }
    }
    let layout = Layout {
        written: written.len(),
        links,
        reached,
    };
    (seen, layout)
}

/// Checks that `root` shows the runtime all of `source`, and says how it is laid out.
fn assert_whole_tree_seen(
    label: &str,
    source: &BTreeMap<Vec<u8>, char>,
    root: &Path,
    task_dir: &Path,
) -> Layout {
    let (seen, layout) = seen_through_links(root, task_dir);
    let differences: Vec<String> = source
        .iter()
        .filter(|(path, kind)| seen.get(*path) != Some(kind))
        .chain(seen.iter().filter(|(path, _)| !source.contains_key(*path)))
        .take(10)
        .map(|(path, kind)| format!("{:?} {kind}", String::from_utf8_lossy(path)))
        .collect();
    assert!(
        differences.is_empty(),
        "{label}: the tree seen through the links differs from the source: {differences:?}"
    );
    println!(
        "{label}: {} entries; {} written into /tmp ({:.1}%), {} of them links reaching {} in the deployment",
        source.len(),
        layout.written,
        layout.written as f64 * 100.0 / source.len() as f64,
        layout.links,
        layout.reached
    );
    layout
}

// ---------------------------------------------------------------------------------
// CPython

/// Imports what the issue names and reports where each module and libpython came from.
const PYTHON_PROBE: &str = r#"
import ctypes, importlib, json, sqlite3, ssl, sys
names = ["ssl", "_ssl", "sqlite3", "_sqlite3", "ctypes", "_ctypes"] + sys.argv[1:]
files = {name: importlib.import_module(name).__file__ for name in names}
with open("/proc/self/maps") as maps:
    libpython = sorted({line.split(None, 5)[5].strip() for line in maps if "libpython" in line})
print(json.dumps({
    "version": sys.version,
    "prefix": sys.prefix,
    "libpython": libpython,
    "files": files,
    "sqlite": sqlite3.connect(":memory:").execute("select sqlite_version()").fetchone()[0],
    "openssl": ssl.OPENSSL_VERSION,
    "pid": ctypes.CDLL(None).getpid(),
}))
"#;

/// C extensions that pip installed into the tree's site-packages, among those the
/// research found there: the ones present are imported.
fn site_packages_extensions(prefix: &Path) -> Vec<&'static str> {
    let site = prefix.join("lib/python3.11/site-packages");
    [
        "pydantic_core._pydantic_core",
        "orjson.orjson",
        "yaml._yaml",
        "_cffi_backend",
        "markupsafe._speedups",
        "regex._regex",
        "cryptography.hazmat.bindings._rust",
    ]
    .into_iter()
    .filter(|module| {
        let path = site.join(module.replace('.', "/"));
        let (dir, stem) = (path.parent().unwrap(), path.file_name().unwrap());
        fs::read_dir(dir).is_ok_and(|mut items| {
            items.any(|item| {
                let name = item.unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(&format!("{}.", stem.to_string_lossy())) && name.ends_with(".so")
            })
        })
    })
    .collect()
}

/// The probe ran this tree's own interpreter: 3.11.7 (Debian's 3.11.2 libpython in
/// /usr/lib would stand in silently without LD_LIBRARY_PATH), with every module from
/// `root`, and libpython mapped from the tree or the deployment.
fn check_python_probe(output: &Output, root: &Path, task_dir: &Path, extensions: usize) {
    let line = text(&output.stdout);
    let probe: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "probe printed {line:?} ({e}); stderr {}",
            text(&output.stderr)
        )
    });
    assert!(
        probe["version"].as_str().unwrap().starts_with("3.11.7 "),
        "{probe}"
    );
    assert_eq!(probe["prefix"], arg(root), "{probe}");
    let libpython: Vec<&str> = probe["libpython"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let [mapped] = libpython.as_slice() else {
        panic!("one libpython mapped: {probe}");
    };
    assert!(
        mapped.ends_with("/lib/libpython3.11.so.1.0")
            && (Path::new(mapped).starts_with(root) || Path::new(mapped).starts_with(task_dir)),
        "libpython from {mapped}, not from the tree: {probe}"
    );
    let files = probe["files"].as_object().unwrap();
    assert_eq!(files.len(), 6 + extensions, "{probe}");
    for (module, file) in files {
        assert!(
            Path::new(file.as_str().unwrap()).starts_with(root.join("lib/python3.11")),
            "{module} from {file}"
        );
    }
}

#[test]
fn cpython_runs_from_a_read_only_deployment_with_a_tenth_of_its_entries_in_tmp() {
    let prefix = Path::new(PYTHON_PREFIX);
    if !present(
        &format!("CPython 3.11.7 at {PYTHON_PREFIX} (readable)"),
        prefix.join("bin/python3.11").is_file(),
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let probe = sandbox.path("probe.py");
    write(&probe, PYTHON_PROBE.as_bytes(), 0o644);
    let extensions = site_packages_extensions(prefix);
    assert!(
        extensions.len() >= 3,
        "too few C extensions in site-packages: {extensions:?}"
    );
    let args: Vec<&str> = [arg(&probe)]
        .into_iter()
        .chain(extensions.iter().copied())
        .collect();
    let skip = ["test", "tests", "__pycache__"];
    let source = entries_under_except(prefix, &skip);
    for budget in ["200MB", "0"] {
        let out = sandbox.path(&format!("budget-{budget}"));
        pack(
            prefix,
            "bin/python3",
            &out,
            &[
                "--exclude",
                "test",
                "--exclude",
                "tests",
                "--exclude",
                "__pycache__",
                "--name",
                "py",
                "--task-budget",
                budget,
                "--env",
                "LD_LIBRARY_PATH={root}/lib",
                // Nothing may be written into the tree: the stat check would throw
                // the copy away at the next init.
                "--env",
                "PYTHONDONTWRITEBYTECODE=1",
                // This machine's CPython needs glibc 2.35 (issue 12's check refuses
                // it for provided.al2023); here it runs on the glibc it was built for.
                "--allow-incompatible",
            ],
        );
        let task = checked_task_part(&out);
        let label = format!("cpython at --task-budget {budget}");
        // At budget 0 every entry is written, which is slow enough to do once.
        let who = if budget == "0" {
            vec![Who::Me]
        } else {
            users()
        };
        let trees = cold_then_warm(
            &sandbox,
            &out,
            &label,
            &who,
            &[],
            [&args, &args],
            |output, root| check_python_probe(output, root, &task, extensions.len()),
        );
        for (who, root) in trees {
            let layout =
                assert_whole_tree_seen(&format!("{label} as {who:?}"), &source, &root, &task);
            if budget != "0" {
                assert!(
                    layout.written * 10 <= source.len(),
                    "{} of {} entries written into /tmp: over a tenth",
                    layout.written,
                    source.len()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Node and npm

/// This machine's `node` and the npm package its `npm` runs, by their real paths.
fn node_and_npm() -> Option<(PathBuf, PathBuf)> {
    let find = |program: &str| {
        let output = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .ok()?;
        fs::canonicalize(text(&output.stdout).trim()).ok()
    };
    let node = find("node")?;
    // npm is `bin/npm-cli.js` inside its package.
    let npm = find("npm")?.parent()?.parent()?.to_owned();
    npm.join("package.json").is_file().then_some((node, npm))
}

#[test]
fn npm_runs_through_its_symlink_from_a_read_only_deployment() {
    let found = node_and_npm();
    if !present("node and npm", found.is_some()) {
        return;
    }
    let (node, npm) = found.unwrap();
    let sandbox = Sandbox::new();
    let tree = sandbox.path("node");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("lib/node_modules")).unwrap();
    fs::copy(&node, tree.join("bin/node")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&npm)
        .arg(tree.join("lib/node_modules/npm"))
        .status()
        .unwrap();
    assert!(copied.success());
    symlink(
        "../lib/node_modules/npm/bin/npm-cli.js",
        tree.join("bin/npm"),
    )
    .unwrap();
    let version = Command::new(tree.join("bin/npm"))
        .arg("--version")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", tree.join("bin").display()),
        )
        .output()
        .unwrap();
    let version = text(&version.stdout).trim().to_owned();
    assert!(!version.is_empty());
    let source = entries_under(&tree);

    for budget in ["200MB", "0"] {
        let out = sandbox.path(&format!("budget-{budget}"));
        // npm-cli.js starts with `#!/usr/bin/env node`: the tree's node goes first.
        let extra = [
            "--name",
            "npm",
            "--task-budget",
            budget,
            "--env",
            "PATH={root}/bin:/usr/bin:/bin",
        ];
        pack(&tree, "bin/npm", &out, &extra);
        let task = checked_task_part(&out);
        let label = format!("npm at --task-budget {budget}");
        // The second start lists the global packages: npm finds its prefix from
        // node's real path, and itself below it.
        let trees = cold_then_warm(
            &sandbox,
            &out,
            &label,
            &users(),
            &[],
            [&["--version"], &["ls", "--global", "--depth=0"]],
            |output, root| {
                let stdout = text(&output.stdout);
                if stdout.contains("npm@") {
                    let mut lines = stdout.lines();
                    assert_eq!(lines.next(), Some(arg(&root.join("lib"))), "{stdout}");
                    assert!(stdout.contains(&format!("npm@{version}")), "{stdout}");
                } else {
                    assert_eq!(stdout.trim(), version, "{}", text(&output.stderr));
                }
            },
        );
        for (who, root) in trees {
            assert_whole_tree_seen(&format!("{label} as {who:?}"), &source, &root, &task);
        }
    }
}

// ---------------------------------------------------------------------------------
// Chromium, as @sparticuz/chromium extracts it

/// Extracts @sparticuz/chromium's tree into `dest` as it does on Lambda's Node 20
/// (with its AL2023 libraries); returns the browser arguments it recommends.
fn sparticuz_tree(dest: &Path) -> Vec<String> {
    fs::create_dir_all(dest).unwrap();
    let script = "const c = require(process.argv[1]); const m = c.default || c;\n\
                  m.executablePath().then(p => console.log(JSON.stringify({ path: p, args: m.args })));";
    let output = Command::new("node")
        .args(["-e", script])
        .arg(repo().join(SPARTICUZ))
        .env("TMPDIR", dest)
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_nodejs20.x")
        .output()
        .expect("run node");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let found: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(found["path"], arg(&dest.join("chromium")), "{found}");
    found["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Drives the packed Chromium over DevTools (`tests/support/cdp.mjs`) as `who`, and
/// checks that it rendered a page with SwiftShader's WebGL: the GL libraries were
/// found next to the binary's real path.
fn render_page(sandbox: &Sandbox, out: &Path, who: Who, browser_args: &[String]) {
    let cdp = sandbox.path("cdp.mjs");
    if !cdp.exists() {
        fs::copy(repo().join("tests/support/cdp.mjs"), &cdp).unwrap();
    }
    let cache = sandbox.cache_dir(&format!("render-{who:?}-tmp"), who);
    let mut node = as_user(who, "node");
    node.env("COLDPACK_CACHE_DIR", &cache).env("HOME", &cache);
    let output = with_read_only(out, node)
        .arg("--experimental-websocket")
        .arg(&cdp)
        .arg(out.join("bootstrap"))
        .args(browser_args)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let page: Value = serde_json::from_str(stdout.trim()).expect("cdp.mjs's JSON");
    assert_eq!(page["text"], "complete:hello from chromium", "{page}");
    assert!(
        page["webgl"]
            .as_str()
            .unwrap_or_default()
            .contains("SwiftShader"),
        "{page}"
    );
    println!("chromium page as {who:?}: {page}");
}

/// `--version` printed this Chromium, with NSS from the tree's AL2023 libraries (the
/// loader's own report: Debian has an NSS of its own in /usr/lib).
fn check_chromium_version(output: &Output, root: &Path) {
    assert!(
        text(&output.stdout).starts_with("Chromium 147."),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let nss = format!(
        "calling init: {}",
        root.join("al2023/lib/libnss3.so").display()
    );
    assert!(
        text(&output.stderr).contains(&nss),
        "{nss} is not in:\n{}",
        text(&output.stderr)
    );
}

#[test]
fn chromium_runs_direct_when_it_fits_and_from_tmp_beside_its_kept_libraries_when_not() {
    if !present(
        &format!("node and @sparticuz/chromium in {SPARTICUZ}"),
        node_and_npm().is_some() && repo().join(SPARTICUZ).join("package.json").is_file(),
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let tree = sandbox.path("chromium");
    let browser_args = sparticuz_tree(&tree);
    // sparticuz writes the browser owner-only; the deployment gives it to everyone.
    assert_eq!(
        fs::metadata(tree.join("chromium")).unwrap().mode() & 0o777,
        0o700
    );
    let source = entries_under(&tree);
    let env = [("LD_DEBUG", "libs")];
    let version = [&["--version"][..], &["--version"][..]];

    for budget in ["240MB", "200MB", "0"] {
        let out = sandbox.path(&format!("budget-{budget}"));
        pack(
            &tree,
            "chromium",
            &out,
            &[
                "--name",
                "chromium",
                "--task-budget",
                budget,
                "--env",
                "LD_LIBRARY_PATH={root}/al2023/lib",
                "--env",
                "FONTCONFIG_PATH={root}/fonts",
            ],
        );
        let label = format!("chromium at --task-budget {budget}");
        let summary = inspect(&out);
        assert_eq!(summary["direct"], budget == "240MB", "{label}: {summary}");
        let task = checked_task_part(&out);
        let trees = cold_then_warm(
            &sandbox,
            &out,
            &label,
            &users(),
            &env,
            version,
            check_chromium_version,
        );
        if budget == "200MB" {
            // The tree does not fit: the browser, a program, is never kept alone, so
            // it is extracted; its directories and large libraries are kept.
            for (who, root) in &trees {
                assert_whole_tree_seen(&format!("{label} as {who:?}"), &source, root, &task);
                let kinds = entries_under(root);
                for (path, kind) in [
                    ("chromium", 'f'),
                    ("al2023", 'l'),
                    ("fonts", 'l'),
                    ("libGLESv2.so", 'l'),
                    ("libvk_swiftshader.so", 'l'),
                ] {
                    assert_eq!(kinds.get(path.as_bytes()), Some(&kind), "{path}: {kinds:?}");
                }
            }
        }
        if budget != "0" {
            for who in users() {
                render_page(&sandbox, &out, who, &browser_args);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// A small runtime, for what a deployment must hold and what the packer says about it

/// The fixture's entrypoint: prints what it reads from the tree ({root} is its first
/// argument), tries to write where `WRITE_INTO` says, and leaves `RAN_MARKER` behind.
const ENTRY: &str = r#"#!/bin/sh
echo "greeting=$(cat "$1/lib/greeting.txt")"
echo "blob=$(wc -c < "$1/data.bin")"
if [ -n "$WRITE_INTO" ]; then
    if error=$(touch "$1/$WRITE_INTO/written" 2>&1); then echo "write=ok"; else echo "write=failed: $error"; fi
fi
if [ -n "$RAN_MARKER" ]; then touch "$RAN_MARKER"; fi
"#;

/// A small runtime: `bin/entry` (the entrypoint) beside a link to it, which keeps
/// `bin/` in /tmp; `lib/` (kept whole: forty small files, a subdirectory, and
/// `lib/cache/`, which the entrypoint may write into); `data.bin` (1.5 MiB, kept
/// alone); `etc/secret` (0600, which stays in /tmp).
fn fixture(root: &Path, greeting: &str) {
    for dir in ["bin", "lib/sub", "lib/cache", "etc"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    write(&root.join("bin/entry"), ENTRY.as_bytes(), 0o755);
    symlink("entry", root.join("bin/start")).unwrap();
    write(&root.join("lib/greeting.txt"), greeting.as_bytes(), 0o644);
    for i in 0..40 {
        let bytes = realistic_bytes(2_000 + i * 100, i as u64);
        write(&root.join(format!("lib/file-{i:02}.txt")), &bytes, 0o644);
    }
    write(&root.join("lib/sub/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    write(&root.join("lib/cache/.keep"), b"", 0o644);
    write(&root.join("data.bin"), &realistic_bytes(3 << 19, 99), 0o644);
    write(&root.join("etc/secret"), b"not for others\n", 0o600);
}

/// The fixture packed into `out` with `extra` options, `{root}` as its argument.
fn pack_fixture(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = [&["--name", "fixture", "--arg", "{root}"][..], extra].concat();
    pack(src, "bin/entry", out, &args)
}

fn stdout_has(output: &Output, line: &str) -> bool {
    text(&output.stdout).lines().any(|l| l == line)
}

#[test]
fn writing_into_a_kept_directory_fails_as_on_lambda_and_keep_in_tmp_makes_it_writable() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let kept = sandbox.path("kept");
    pack_fixture(&src, &kept, &[]);
    let in_tmp = sandbox.path("in-tmp");
    pack_fixture(&src, &in_tmp, &["--keep-in-tmp", "lib/cache"]);
    let env = [("WRITE_INTO", "lib/cache")];
    for who in users() {
        // lib/ is in the deployment: the write fails, the start itself succeeded.
        let cache = sandbox.cache_dir(&format!("kept-{who:?}"), who);
        let output = start_deployed(&kept, &cache, who, &env, &[]);
        assert_eq!(decision(&output), "extract", "{}", text(&output.stderr));
        assert!(
            stdout_has(&output, "greeting=hello"),
            "{}",
            text(&output.stdout)
        );
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("write=failed:")
                && (stdout.contains("Read-only file system")
                    || stdout.contains("Permission denied")),
            "{who:?}: {stdout}"
        );
        println!(
            "{who:?} writing into a kept directory: {}",
            stdout.lines().last().unwrap()
        );

        // Kept in /tmp, it takes the write; the next init then finds the copy changed
        // and extracts it again (docs/limits.md).
        let cache = sandbox.cache_dir(&format!("in-tmp-{who:?}"), who);
        let output = start_deployed(&in_tmp, &cache, who, &env, &[]);
        assert_eq!(decision(&output), "extract", "{}", text(&output.stderr));
        assert!(
            stdout_has(&output, "write=ok"),
            "{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        let again = start_deployed(&in_tmp, &cache, who, &[], &[]);
        assert_eq!(decision(&again), "extract", "{}", text(&again.stderr));
    }
}

/// `tests/support/runtime_api.py` on a loopback port: (its process, `host:port`).
fn runtime_api(sandbox: &Sandbox) -> (std::process::Child, String) {
    let mut child = Command::new("python3")
        .arg(repo().join("tests/support/runtime_api.py"))
        .args(["--max-lifetime", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(sandbox.path("runtime_api.log")).unwrap())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let port = coldpack::run::first_line(stdout, std::time::Duration::from_secs(20))
        .expect("runtime_api.py printed its port");
    (child, format!("127.0.0.1:{}", port.trim()))
}

/// The init errors the Runtime API at `address` received.
fn init_errors(address: &str) -> Vec<Value> {
    let script = "import json, sys, urllib.request\n\
                  print(urllib.request.urlopen(f'http://{sys.argv[1]}/_test/init-errors', timeout=10).read().decode())";
    let output = Command::new("python3")
        .args(["-c", script, address])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_deployment_without_its_own_task_part_is_refused_reported_and_runs_nothing() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let ours = sandbox.path("ours");
    pack_fixture(&src, &ours, &[]);
    fs::write(src.join("lib/greeting.txt"), "another").unwrap();
    let theirs = sandbox.path("theirs");
    pack_fixture(&src, &theirs, &[]);
    let copy = |from: &Path, to: &Path| {
        assert!(Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success());
    };
    let deployment = |label: &str, task: Option<&Path>| {
        let dir = sandbox.path(label);
        fs::create_dir(&dir).unwrap();
        copy(&ours.join("bootstrap"), &dir);
        if let Some(task) = task {
            copy(task, &dir);
        }
        dir
    };
    let alone = deployment("bootstrap-alone", None);
    let other = deployment("another-pack", Some(&task_dir(&theirs)));
    let partial = deployment("partial-upload", Some(&task_dir(&ours)));
    fs::remove_file(task_dir(&ours).join("data.bin")).unwrap();
    let partial_task = partial.join(task_dir(&ours).file_name().unwrap());
    fs::remove_file(partial_task.join("data.bin")).unwrap();

    let (mut api, address) = runtime_api(&sandbox);
    let mut reported = 0;
    for who in users() {
        for dir in [&alone, &other, &partial] {
            let cache = sandbox.cache_dir(&format!("tmp-{who:?}-{}", reported), who);
            let marker = sandbox
                .cache_dir(&format!("ran-{who:?}-{reported}"), who)
                .join("ran");
            let env = [
                ("AWS_LAMBDA_RUNTIME_API", address.as_str()),
                ("RAN_MARKER", arg(&marker)),
            ];
            let output = start_deployed(dir, &cache, who, &env, &[]);
            let stderr = text(&output.stderr);
            assert!(
                !output.status.success(),
                "{who:?} {}: {stderr}",
                dir.display()
            );
            assert_eq!(decision(&output), "error", "{stderr}");
            assert_eq!(
                log_field(&output.stderr, "error_type").as_deref(),
                Some("Runtime.TaskPartMissing"),
                "{stderr}"
            );
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("coldpack: error: ") && first.contains("coldpack-fixture."),
                "{stderr}"
            );
            assert!(
                !marker.exists() && output.stdout.is_empty(),
                "the runtime ran: {stderr}"
            );
            assert!(
                names_in(&cache).iter().all(|n| !n.ends_with(".complete")),
                "{:?}",
                names_in(&cache)
            );
            reported += 1;
            let errors = init_errors(&address);
            assert_eq!(errors.len(), reported, "{errors:?}");
            assert_eq!(
                errors[reported - 1]["error_type"],
                "Runtime.TaskPartMissing",
                "{errors:?}"
            );
        }
    }
    api.kill().unwrap();
    api.wait().unwrap();
}

#[test]
fn budget_zero_writes_no_task_part_and_extracts_the_tree_as_it_is() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let out = sandbox.path("out");
    pack_fixture(&src, &out, &["--task-budget", "0", "--zip"]);
    assert_eq!(names_in(&out), ["bootstrap", "function.zip"]);
    let summary = inspect(&out);
    assert_eq!(summary["task_part"]["entries"], 0, "{summary}");
    assert_eq!(summary["entries"]["task_links"], 0, "{summary}");
    let listing = Command::new("unzip")
        .arg("-Z1")
        .arg(out.join("function.zip"))
        .output()
        .unwrap();
    assert_eq!(text(&listing.stdout), "bootstrap\n");
    for who in users() {
        let cache = sandbox.cache_dir(&format!("tmp-{who:?}"), who);
        let output = start_deployed(&out, &cache, who, &[], &[]);
        assert_eq!(decision(&output), "extract", "{}", text(&output.stderr));
        let root = tree_root(&output, &out, &cache);
        // Entry by entry as packed: modes, mtimes, contents, the link.
        assert_eq!(compare_trees(&src, &root), Vec::<String>::new());
    }
}

/// The smallest `--task-budget` at which `holds` for the fixture at `src`, by
/// bisection between `low` (where it does not) and `high` (where it does).
fn smallest_budget(
    sandbox: &Sandbox,
    src: &Path,
    mut low: u64,
    mut high: u64,
    holds: impl Fn(&Path) -> bool,
) -> u64 {
    let out = sandbox.path("bisect");
    let holds_at = |budget: u64| {
        pack_fixture(src, &out, &["--task-budget", &budget.to_string()]);
        holds(&out)
    };
    assert!(!holds_at(low) && holds_at(high));
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if holds_at(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    high
}

/// Entries of the tree at `src`, and bytes of its files.
fn tree_size(src: &Path) -> (u64, u64) {
    let entries = entries_under(src);
    let bytes = entries
        .iter()
        .filter(|(_, kind)| **kind == 'f')
        .map(|(path, _)| fs::metadata(join(src, path)).unwrap().len())
        .sum();
    (entries.len() as u64, bytes)
}

/// What the output at `out` puts into the deployment: the bootstrap and the task part.
fn deployed_bytes(out: &Path) -> u64 {
    fs::metadata(out.join("bootstrap")).unwrap().len()
        + inspect(out)["task_part"]["bytes"].as_u64().unwrap()
}

/// Packs at `budget` and one byte less: `holds` at the first only, and the output at
/// `budget` takes no more than it.
fn assert_boundary(sandbox: &Sandbox, src: &Path, budget: u64, holds: impl Fn(&Path) -> bool) {
    let at = sandbox.path(&format!("at-{budget}"));
    pack_fixture(src, &at, &["--task-budget", &budget.to_string()]);
    let below = sandbox.path(&format!("below-{budget}"));
    pack_fixture(src, &below, &["--task-budget", &(budget - 1).to_string()]);
    assert!(holds(&at) && !holds(&below), "at {budget}");
    assert!(
        deployed_bytes(&at) <= budget,
        "{} over {budget}",
        deployed_bytes(&at)
    );
}

#[test]
fn a_budget_keeps_a_directory_or_the_whole_tree_from_the_byte_it_fits() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let stock = coldpack::STOCK_BOOTSTRAP.len() as u64;
    let (entries, bytes) = tree_size(&src);

    // lib/ goes first (many entries for few bytes): kept, it is one link, and the
    // tree in /tmp has only what is outside it.
    let outside_lib = entries_under(&src)
        .keys()
        .filter(|p| !p.starts_with(b"lib/"))
        .count() as u64;
    let lib_kept = |out: &Path| {
        let summary = inspect(out);
        summary["extract"]["entries"].as_u64().unwrap()
            + summary["entries"]["task_links"].as_u64().unwrap()
            == outside_lib
    };
    let budget = smallest_budget(&sandbox, &src, stock, stock + 2 * bytes, lib_kept);
    assert_boundary(&sandbox, &src, budget, lib_kept);
    println!("lib/ is kept from --task-budget {budget} (the bootstrap alone is {stock})");

    // The whole tree, once nothing in it must stay in /tmp (no link, no owner-only
    // file): it must fit as it is, and then nothing else is counted but its index.
    fs::remove_file(src.join("bin/start")).unwrap();
    fs::remove_dir_all(src.join("etc")).unwrap();
    let (whole_entries, whole_bytes) = tree_size(&src);
    let direct = |out: &Path| inspect(out)["direct"] == true;
    let budget = smallest_budget(&sandbox, &src, stock, stock + 2 * bytes, direct);
    assert_boundary(&sandbox, &src, budget, direct);
    assert!(
        budget >= stock + whole_bytes && budget < stock + whole_bytes + 64 * whole_entries,
        "{budget} for {whole_entries} entries of {whole_bytes} bytes"
    );
    println!("the whole tree ({whole_entries} entries, {whole_bytes} bytes; {entries} entries before) is kept from --task-budget {budget}");
}

#[test]
fn packing_twice_gives_the_same_bootstrap_task_part_and_zip() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let one = sandbox.path("one");
    pack_fixture(&src, &one, &["--zip"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = sandbox.path("two");
    pack_fixture(&src, &two, &["--zip"]);
    for file in ["bootstrap", "function.zip"] {
        assert!(
            fs::read(one.join(file)).unwrap() == fs::read(two.join(file)).unwrap(),
            "two packs of one tree gave different {file}s"
        );
    }
    let (task_one, task_two) = (task_dir(&one), task_dir(&two));
    assert_eq!(task_one.file_name(), task_two.file_name());
    // Entry by entry, but for the mtime of the task part's own directory, which
    // Lambda never sees (the zip records a fixed one).
    let mut want = walk(&task_one);
    let mut got = walk(&task_two);
    want.remove(&Vec::new());
    got.remove(&Vec::new());
    assert!(want == got, "the task parts differ");
}

/// Python's zipfile on a zip: name -> (Unix mode, made on Unix).
fn zip_modes(zip: &Path) -> BTreeMap<String, (u32, bool)> {
    let script = "import json, sys, zipfile\n\
                  print(json.dumps({i.filename: [i.external_attr >> 16, i.create_system == 3] for i in zipfile.ZipFile(sys.argv[1]).infolist()}))";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let members: BTreeMap<String, (u32, bool)> = serde_json::from_slice(&output.stdout).unwrap();
    members
}

#[test]
fn zip_and_layer_carry_the_task_part_with_the_modes_lambda_reads() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let out = sandbox.path("out");
    pack_fixture(&src, &out, &["--zip"]);
    let layer = sandbox.path("layer");
    pack_fixture(&src, &layer, &["--layer"]);
    let task = task_dir(&out);
    let top = task.file_name().unwrap().to_string_lossy().into_owned();

    // What the task part holds on disk is what the zip records, modes included.
    let mut expected = BTreeMap::from([("bootstrap".to_owned(), (0o100755, true))]);
    for (path, kind) in entries_under(&task) {
        let name = format!("{top}/{}", String::from_utf8_lossy(&path));
        let mode = fs::metadata(join(&task, &path)).unwrap().mode();
        let name = if kind == 'd' {
            format!("{}/", name.trim_end_matches('/'))
        } else {
            name
        };
        expected.insert(name, (mode & 0o170777, true));
    }
    let modes = zip_modes(&out.join("function.zip"));
    assert_eq!(modes, expected);
    assert_eq!(zip_modes(&layer.join("layer.zip")), expected);
    for (name, (mode, _)) in &modes {
        assert!(
            [0o100644, 0o100755, 0o040755].contains(mode),
            "{name}: {mode:o}"
        );
    }

    // Info-ZIP reads the same modes, made on Unix.
    let listing = Command::new("unzip")
        .arg("-Z")
        .arg(out.join("function.zip"))
        .output()
        .unwrap();
    let listing = text(&listing.stdout);
    for line in listing.lines().filter(|l| l.contains(&top)) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            ["-rw-r--r--", "-rwxr-xr-x", "drwxr-xr-x"].contains(&fields[0]) && fields[2] == "unx",
            "{line}"
        );
    }

    // Unzipped as Lambda would (by root, read-only), it starts as every user.
    let deployed = sandbox.path("var-task");
    let unzipped = Command::new("unzip")
        .arg("-q")
        .arg(out.join("function.zip"))
        .arg("-d")
        .arg(&deployed)
        .status()
        .unwrap();
    assert!(unzipped.success());
    assert_deployment_modes(&deployed.join(&top));
    for who in users() {
        let cache = sandbox.cache_dir(&format!("tmp-{who:?}"), who);
        let output = start_deployed(&deployed, &cache, who, &[], &[]);
        assert_eq!(decision(&output), "extract", "{}", text(&output.stderr));
        assert!(
            stdout_has(&output, "greeting=hello"),
            "{}",
            text(&output.stdout)
        );
        assert!(
            stdout_has(&output, &format!("blob={}", 3 << 19)),
            "{}",
            text(&output.stdout)
        );
    }
}

#[test]
fn verify_reports_a_changed_missing_or_extra_file_in_the_task_part() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let out = sandbox.path("out");
    pack_fixture(&src, &out, &[]);
    let verify = || {
        coldpack()
            .args(["verify", "--json"])
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(verify().status.success(), "{}", text(&verify().stderr));

    let task = task_dir(&out);
    fs::write(task.join("lib/greeting.txt"), "HELLO").unwrap(); // same size
    fs::set_permissions(
        task.join("lib/file-01.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(task.join("lib/file-02.txt"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    fs::remove_file(task.join("lib/file-03.txt")).unwrap();
    fs::write(task.join("lib/extra.txt"), "extra").unwrap();
    fs::set_permissions(task.join("lib/sub"), fs::Permissions::from_mode(0o700)).unwrap();

    let output = verify();
    assert!(!output.status.success());
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verdict["ok"], false, "{verdict}");
    let mismatches: Vec<&str> = verdict["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for expected in [
        "lib/greeting.txt: its contents differ",
        "lib/file-01.txt: mode 600, packed 644",
        "lib/file-02.txt: size",
        "lib/file-03.txt: ",
        "lib/extra.txt is not part of the payload",
        "lib/sub: mode 700, packed 755",
    ] {
        assert!(
            mismatches.iter().any(|m| m.starts_with(expected)),
            "{expected:?} not in {mismatches:?}"
        );
    }
    assert_eq!(mismatches.len(), 6, "{mismatches:?}");
    assert!(
        text(&output.stderr).contains("6 mismatches"),
        "{}",
        text(&output.stderr)
    );
}

/// The number before `word` in `line`, as the summary prints it.
fn count_before(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches(',') == word)
        .unwrap_or_else(|| panic!("no {word} in {line:?}"));
    words[at - 1].replace(',', "").parse().unwrap()
}

/// Packs the fixture with `options` and checks that the summary, `inspect` and the
/// trees agree on the split; returns the task part and the extracted tree.
fn assert_split_reported(
    sandbox: &Sandbox,
    src: &Path,
    label: &str,
    options: &[&str],
) -> (PathBuf, PathBuf) {
    let out = sandbox.path(label);
    let packed = pack_fixture(src, &out, options);
    let stderr = text(&packed.stderr);
    let line = |prefix: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {stderr}"))
    };
    let (kept, extracted) = (line("kept "), line("extracted "));
    let summary = inspect(&out);
    let task = task_dir(&out);
    let task_entries = entries_under(&task);
    let number = |value: &Value| value.as_u64().unwrap();

    assert_eq!(summary["direct"], false);
    assert_eq!(
        number(&summary["task_part"]["entries"]),
        count_before(kept, "entries")
    );
    assert_eq!(
        number(&summary["task_part"]["entries"]),
        task_entries.len() as u64 - 1
    );
    let task_bytes: u64 = task_entries
        .keys()
        .map(|path| join(&task, path))
        .filter(|path| path.is_file())
        .map(|path| fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(number(&summary["task_part"]["bytes"]), task_bytes);
    assert_eq!(
        number(&summary["extract"]["entries"]),
        count_before(extracted, "entries")
    );
    assert_eq!(
        number(&summary["entries"]["task_links"]),
        count_before(extracted, "links")
    );
    assert_eq!(number(&summary["work_saved_ms"]), count_before(kept, "ms"));
    assert!(number(&summary["work_saved_ms"]) > 0);

    // What a start writes is what they said: the entries to extract and the links.
    let cache = sandbox.cache_dir(&format!("{label}-tmp"), Who::Me);
    let output = start_deployed(&out, &cache, Who::Me, &[], &[]);
    let root = tree_root(&output, &out, &cache);
    let written = entries_under(&root);
    let links = written
        .keys()
        .filter(|p| fs::read_link(join(&root, p)).is_ok_and(|t| t.starts_with(&task)))
        .count();
    assert_eq!(number(&summary["entries"]["task_links"]), links as u64);
    assert_eq!(
        number(&summary["extract"]["entries"]),
        (written.len() - links) as u64
    );
    (task, root)
}

#[test]
fn inspect_and_the_pack_summary_show_the_same_split_as_the_trees() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    // lib/ is one link, data.bin another; bin/, etc/ and the root are extracted.
    let (_, root) = assert_split_reported(&sandbox, &src, "whole-lib", &[]);
    let kind = |root: &Path, path: &str| fs::symlink_metadata(root.join(path)).unwrap().file_type();
    assert!(kind(&root, "lib").is_symlink() && kind(&root, "data.bin").is_symlink());

    // With lib/cache/ in /tmp, lib/ is a directory there: its subdirectory is kept,
    // and its small files are extracted and copied into the task part as well, for
    // whatever climbs out of lib/sub/ with `..` at its real path.
    let (task, root) =
        assert_split_reported(&sandbox, &src, "split-lib", &["--keep-in-tmp", "lib/cache"]);
    assert!(kind(&root, "lib").is_dir() && kind(&root, "lib/sub").is_symlink());
    assert!(kind(&root, "lib/greeting.txt").is_file() && task.join("lib/greeting.txt").is_file());
    assert!(!task.join("lib/cache").exists());
}

#[test]
fn the_task_part_is_open_to_others_whatever_the_umask() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    fixture(&src, "hello");
    let out = sandbox.path("out");
    fs::create_dir(&out).unwrap();
    let packed = Command::new("sh")
        .args(["-c", r#"umask 077 && exec "$@""#, "sh"])
        .arg(env!("CARGO_BIN_EXE_coldpack"))
        .args([
            "pack",
            "--entrypoint",
            "bin/entry",
            "--name",
            "fixture",
            "--arg",
            "{root}",
            "--level",
            "3",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", text(&packed.stderr));
    assert_deployment_modes(&task_dir(&out));
    for who in users() {
        let cache = sandbox.cache_dir(&format!("tmp-{who:?}"), who);
        let output = start_deployed(&out, &cache, who, &[], &[]);
        assert!(
            stdout_has(&output, "greeting=hello"),
            "{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}
