//! Will it run on Lambda? Trees whose ELF files are compiled here by `cc` against this
//! machine's glibc (2.36), checked by `coldpack pack` against the Lambda images: a
//! symbol version the image lacks, a RUNPATH into the build machine, a library that is
//! nowhere, `$ORIGIN` paths that stay inside; the refusal and `--allow-incompatible`.
//! Then `coldpack run`, which hides what the tree names outside itself and keeps the
//! deployment read-only, as root and as an unprivileged user.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use util::*;

/// A C program that calls `_dl_find_object`, which glibc added in 2.35.
const NEEDS_GLIBC_2_35: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    struct dl_find_object found;
    printf("found=%d\n", _dl_find_object((void *)main, &found));
    return 0;
}
"#;

/// A library with one function, and a program that prints what it returns.
const LIBRARY: &str = "int greet(void) { return 42; }\n";
const PROGRAM: &str = r#"
#include <stdio.h>
int greet(void);
int main(void) { printf("greet=%d\n", greet()); return 0; }
"#;

/// Compiles `source` with `cc` into `out`, with extra arguments (libraries, rpaths).
fn cc(source: &str, out: &Path, extra: &[&str]) {
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let file = out.with_extension("c");
    fs::write(&file, source).unwrap();
    let output = Command::new("cc")
        .arg("-o")
        .arg(out)
        .arg(&file)
        .args(extra)
        .output()
        .expect("run cc (gcc)");
    assert!(output.status.success(), "cc: {}", text(&output.stderr));
    fs::remove_file(&file).unwrap();
}

/// `libgreet.so` built in `dir`.
fn libgreet(dir: &Path) -> PathBuf {
    let lib = dir.join("libgreet.so");
    cc(
        LIBRARY,
        &lib,
        &["-shared", "-fPIC", "-Wl,-soname,libgreet.so"],
    );
    lib
}

/// `bin/app` in `tree`, linked against `libgreet.so` in `lib_dir`, with this RUNPATH.
fn app(tree: &Path, lib_dir: &Path, runpath: &str) {
    let link_dir = format!("-L{}", lib_dir.display());
    let rpath = format!("-Wl,-rpath,{runpath}");
    cc(
        PROGRAM,
        &tree.join("bin/app"),
        &[&link_dir, "-lgreet", &rpath, "-Wl,--enable-new-dtags"],
    );
}

fn refused(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "packed, but should not:\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("coldpack: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    error.to_string()
}

fn packed(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "refused:\n{stderr}");
    stderr
}

#[test]
fn glibc_newer_than_the_image_refuses_the_entrypoint_with_the_fix() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    cc(NEEDS_GLIBC_2_35, &tree.join("bin/app"), &[]);
    let error = refused(&try_pack(&tree, "bin/app", &sandbox.path("out"), &[]));
    assert!(
        error.contains("bin/app needs GLIBC_2.35 from libc.so.6"),
        "{error}"
    );
    assert!(error.contains("provided.al2023 has glibc 2.34"), "{error}");
    assert!(error.contains("manylinux2014"), "{error}");
    assert!(error.contains("--allow-incompatible"), "{error}");
    assert!(
        !sandbox.path("out/bootstrap").exists(),
        "nothing is written"
    );
}

#[test]
fn allow_incompatible_packs_with_the_findings_as_warnings() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    cc(NEEDS_GLIBC_2_35, &tree.join("bin/app"), &[]);
    let out = sandbox.path("out");
    let stderr = packed(&try_pack(&tree, "bin/app", &out, &["--allow-incompatible"]));
    assert!(
        warnings(&stderr)
            .iter()
            .any(|w| w.contains("GLIBC_2.35") && w.contains("--allow-incompatible")),
        "{stderr}"
    );
    assert!(out.join("bootstrap").exists());

    // The same from coldpack.toml.
    fs::write(
        sandbox.path("coldpack.toml"),
        "allow-incompatible = true\nruntime = \"provided.al2023\"\n",
    )
    .unwrap();
    let output = coldpack()
        .arg("pack")
        .arg(&tree)
        .args(["--entrypoint", "bin/app", "--level", "1", "-o"])
        .arg(sandbox.path("out-toml"))
        .output()
        .unwrap();
    packed(&output);
}

#[test]
fn every_program_built_here_is_too_new_for_provided_al2_but_not_al2023() {
    // Since glibc 2.34 every program needs __libc_start_main@GLIBC_2.34.
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    cc(
        "int main(void) { return 0; }\n",
        &tree.join("bin/hello"),
        &[],
    );
    packed(&try_pack(&tree, "bin/hello", &sandbox.path("out"), &[]));
    let error = refused(&try_pack(
        &tree,
        "bin/hello",
        &sandbox.path("out-al2"),
        &["--runtime", "provided.al2"],
    ));
    assert!(error.contains("GLIBC_2.34"), "{error}");
    assert!(error.contains("provided.al2 has glibc 2.26"), "{error}");
}

#[test]
fn runpath_into_the_build_machine_is_named_and_ld_library_path_fixes_it() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    // Built as a pyenv CPython is: RUNPATH is the tree's own lib/ where it was built.
    let lib = tree.join("lib");
    fs::create_dir_all(&lib).unwrap();
    libgreet(&lib);
    app(&tree, &lib, lib.to_str().unwrap());
    let error = refused(&try_pack(&tree, "bin/app", &sandbox.path("out"), &[]));
    assert!(
        error.contains("libgreet.so is in lib/ but on no search path"),
        "{error}"
    );
    assert!(
        error.contains(&format!("RUNPATH {}", lib.display())),
        "{error}"
    );
    assert!(error.contains("this tree's own lib/"), "{error}");
    assert!(error.contains("LD_LIBRARY_PATH={root}/lib"), "{error}");

    let stderr = packed(&try_pack(
        &tree,
        "bin/app",
        &sandbox.path("out"),
        &["--env", "LD_LIBRARY_PATH={root}/lib"],
    ));
    // Still named, since here it finds what Lambda will not have.
    assert!(
        warnings(&stderr).iter().any(|w| w
            .contains("RUNPATH or RPATH directories outside the tree")
            && w.contains(&lib.display().to_string())),
        "{stderr}"
    );
}

#[test]
fn origin_relative_runpath_resolves_inside_the_tree() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    let lib = tree.join("lib");
    fs::create_dir_all(&lib).unwrap();
    libgreet(&lib);
    app(&tree, &lib, "$ORIGIN/../lib");
    // A link in the way, as trees have: bin/current -> app.
    std::os::unix::fs::symlink("app", tree.join("bin/current")).unwrap();
    let stderr = packed(&try_pack(&tree, "bin/current", &sandbox.path("out"), &[]));
    assert!(warnings(&stderr).is_empty(), "{stderr}");
}

#[test]
fn library_in_neither_tree_nor_image_is_refused_and_where_it_is_here_is_said() {
    let sandbox = Sandbox::new();
    let elsewhere = sandbox.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    libgreet(&elsewhere);
    let tree = sandbox.path("runtime");
    app(&tree, &elsewhere, elsewhere.to_str().unwrap());
    let error = refused(&try_pack(&tree, "bin/app", &sandbox.path("out"), &[]));
    assert!(
        error.contains(
            "bin/app needs libgreet.so, which is neither in the tree nor in provided.al2023"
        ),
        "{error}"
    );
    assert!(
        error.contains(&format!("this machine has it in {}", elsewhere.display())),
        "{error}"
    );
}

#[test]
fn objects_loaded_later_are_grouped_warnings_not_refusals() {
    let sandbox = Sandbox::new();
    let elsewhere = sandbox.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    libgreet(&elsewhere);
    let tree = sandbox.path("runtime");
    write(
        &{
            fs::create_dir_all(tree.join("bin")).unwrap();
            tree.join("bin/start")
        },
        b"#!/bin/sh\necho started\n",
        0o755,
    );
    // Two plugins nobody loads at start: one needs a library that is nowhere on
    // Lambda, one a glibc too new.
    let link_dir = format!("-L{}", elsewhere.display());
    cc(
        "int greet(void); int plugin(void) { return greet(); }\n",
        &tree.join("plugins/uses-greet.so"),
        &["-shared", "-fPIC", &link_dir, "-lgreet"],
    );
    cc(
        "#define _GNU_SOURCE\n#include <dlfcn.h>\nint plugin(void) { struct dl_find_object f; return _dl_find_object((void *)plugin, &f); }\n",
        &tree.join("plugins/new-glibc.so"),
        &["-shared", "-fPIC"],
    );
    let stderr = packed(&try_pack(&tree, "bin/start", &sandbox.path("out"), &[]));
    let warned = warnings(&stderr);
    assert!(
        warned.iter().any(|w| w
            .contains("1 ELF object needs libraries that provided.al2023 cannot find")
            && w.contains("libgreet.so (needed by plugins/uses-greet.so)")),
        "{stderr}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("1 ELF object needs symbol versions newer")
                && w.contains("plugins/new-glibc.so (GLIBC_2.35)")),
        "{stderr}"
    );
}

#[test]
fn static_libraries_are_linted_and_the_suggested_exclude_removes_them() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    write(
        &{
            fs::create_dir_all(tree.join("bin")).unwrap();
            tree.join("bin/start")
        },
        b"#!/bin/sh\n",
        0o755,
    );
    let config = tree.join("lib/python3.11/config-3.11-x86_64-linux-gnu");
    fs::create_dir_all(&config).unwrap();
    write(
        &config.join("libpython3.11.a"),
        &realistic_bytes(3 << 20, 1),
        0o644,
    );
    let stderr = packed(&try_pack(&tree, "bin/start", &sandbox.path("out"), &[]));
    let lint = warnings(&stderr)
        .into_iter()
        .find(|w| w.contains("static librar"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        lint.contains("1 static library or object file costs 3.0 MiB"),
        "{lint}"
    );
    assert!(lint.contains("libpython3.11.a (3.0 MiB)"), "{lint}");
    assert!(lint.contains("--exclude '*.a'"), "{lint}");

    let stderr = packed(&try_pack(
        &tree,
        "bin/start",
        &sandbox.path("out2"),
        &["--exclude", "*.a"],
    ));
    assert!(!stderr.contains("static librar"), "{stderr}");
}

/// `coldpack run OUT` as `who`.
fn run(who: Who, out: &Path) -> Output {
    as_user(who, env!("CARGO_BIN_EXE_coldpack"))
        .arg("run")
        .arg(out)
        .args(["--timeout", "20"])
        .output()
        .expect("run coldpack run")
}

#[test]
fn run_fails_for_a_tree_that_needs_its_build_location_and_passes_once_fixed() {
    let sandbox = Sandbox::new();
    let build = sandbox.path("build-location/lib");
    fs::create_dir_all(&build).unwrap();
    libgreet(&build);
    let tree = sandbox.path("runtime");
    app(&tree, &build, build.to_str().unwrap());
    let ran = Command::new(tree.join("bin/app")).output().unwrap();
    assert_eq!(text(&ran.stdout), "greet=42\n", "it works on this machine");
    let out = sandbox.path("out");
    packed(&try_pack(&tree, "bin/app", &out, &["--allow-incompatible"]));
    for who in users() {
        let output = run(who, &out);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{who:?}: ran:\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "hidden, as Lambda has none of it: {}",
                build.display()
            )),
            "{who:?}: {stderr}"
        );
        assert!(
            stderr.contains("libgreet.so: cannot open shared object file"),
            "{who:?}: {stderr}"
        );
    }

    // The fix: the library in the tree, and the search path recorded.
    fs::create_dir_all(tree.join("lib")).unwrap();
    fs::copy(build.join("libgreet.so"), tree.join("lib/libgreet.so")).unwrap();
    packed(&try_pack(
        &tree,
        "bin/app",
        &out,
        &["--env", "LD_LIBRARY_PATH={root}/lib"],
    ));
    for who in users() {
        let output = run(who, &out);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{who:?}: {stderr}");
        assert_eq!(
            text(&output.stdout).matches("greet=42").count(),
            2,
            "{who:?}: {stderr}"
        );
    }
}

#[test]
fn run_deploys_coldpack_parts_read_only_so_a_write_into_the_deployment_fails() {
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    fs::create_dir_all(tree.join("bin")).unwrap();
    let script = "#!/bin/sh\ncat \"$LAMBDA_TASK_ROOT/coldpack-part/kept.txt\"\necho written > \"$LAMBDA_TASK_ROOT/coldpack-part/new.txt\" && echo wrote-into-the-deployment\n";
    write(&tree.join("bin/start"), script.as_bytes(), 0o755);
    let out = sandbox.path("out");
    packed(&try_pack(&tree, "bin/start", &out, &[]));
    // What the packer keeps beside the bootstrap is deployed with it.
    fs::create_dir_all(out.join("coldpack-part")).unwrap();
    write(
        &out.join("coldpack-part/kept.txt"),
        b"kept beside the bootstrap\n",
        0o644,
    );
    write(&out.join("unrelated.txt"), b"not deployed\n", 0o644);
    for who in users() {
        let output = run(who, &out);
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{who:?}: {stdout}{stderr}");
        assert_eq!(
            stdout.matches("kept beside the bootstrap").count(),
            2,
            "{who:?}: {stderr}"
        );
        assert!(
            !stdout.contains("wrote-into-the-deployment"),
            "{who:?}: {stdout}"
        );
        assert!(
            stderr.contains("Read-only file system") || stderr.contains("Permission denied"),
            "{who:?}: {stderr}"
        );
    }
    assert!(!out.join("coldpack-part/new.txt").exists());
}

#[test]
fn run_without_namespaces_says_that_this_machine_is_not_hidden() {
    let sandbox = Sandbox::new();
    let build = sandbox.path("build-location/lib");
    fs::create_dir_all(&build).unwrap();
    libgreet(&build);
    let tree = sandbox.path("runtime");
    app(&tree, &build, build.to_str().unwrap());
    let out = sandbox.path("out");
    packed(&try_pack(&tree, "bin/app", &out, &["--allow-incompatible"]));
    // No `unshare` to be found: the tree finds its build location, and `run` says so.
    let output = coldpack()
        .arg("run")
        .arg(&out)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("this machine is not hidden from the tree"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "the tree would use {} of this machine",
            build.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_images_library_wins_over_the_trees_copy_unless_ld_library_path_says_otherwise() {
    // The tree ships its own libstdc++.so.6, newer than the image's, and finds it
    // through $ORIGIN; Lambda's LD_LIBRARY_PATH puts the image's /lib64 first.
    let sandbox = Sandbox::new();
    let tree = sandbox.path("runtime");
    let lib = tree.join("lib");
    fs::create_dir_all(&lib).unwrap();
    let script = sandbox.path("versions.map");
    fs::write(
        &script,
        "GLIBCXX_3.4.99 { global: newest_cxx; local: *; };\n",
    )
    .unwrap();
    cc(
        "int newest_cxx(void) { return 1; }\n",
        &lib.join("libstdc++.so.6"),
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libstdc++.so.6",
            &format!("-Wl,--version-script={}", script.display()),
        ],
    );
    cc(
        "int newest_cxx(void);\nint main(void) { return newest_cxx() - 1; }\n",
        &tree.join("bin/app"),
        &[
            &format!("-L{}", lib.display()),
            "-l:libstdc++.so.6",
            "-Wl,-rpath,$ORIGIN/../lib",
            "-Wl,--enable-new-dtags",
        ],
    );
    let error = refused(&try_pack(&tree, "bin/app", &sandbox.path("out"), &[]));
    assert!(
        error.contains("bin/app needs GLIBCXX_3.4.99 from libstdc++.so.6, but provided.al2023 has libstdc++ 3.4.33"),
        "{error}"
    );
    assert!(
        error.contains("the tree's lib/libstdc++.so.6 is not used"),
        "{error}"
    );
    packed(&try_pack(
        &tree,
        "bin/app",
        &sandbox.path("out"),
        &["--env", "LD_LIBRARY_PATH={root}/lib"],
    ));
}
