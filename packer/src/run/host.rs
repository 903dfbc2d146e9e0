//! What `coldpack run` does so that the build machine stops helping: on Lambda the
//! deployment is read-only and the tree's `RUNPATH`s and absolute links into the
//! build machine lead nowhere, so here too.
//!
//! Each start runs in a private mount namespace (util-linux `unshare`, then `mount`
//! in a small `sh` script, then `exec` of the bootstrap, so the pid stays the one
//! `run` waits for): every directory the tree names outside itself is covered with
//! an empty read-only tmpfs, and the task root is bind-mounted read-only on itself.
//! As root that is `unshare --mount`. As another user it takes an unprivileged user
//! namespace that maps the user to root for the mounts, and a second one nested in it
//! that maps them back before the bootstrap starts, so the bootstrap runs as that user
//! and not as a root of any kind. Where no namespace can be made (a kernel or container
//! that forbids them), nothing is hidden and `run` says so; the task root then relies
//! on its missing write bits, which root ignores.
//!
//! This machine's own system directories are never hidden (the runtime runs on this
//! machine's loader and libc here), nor the directories that hold the task root and
//! cache; `run` names what it leaves visible.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Run by `sh` inside the new mount namespace: `$1` is the task root, `$2` an empty
/// file, then the directories to cover up to `--`, then the files to cover up to
/// `--`, then the command to exec. Files come last: `mount` must still find its own
/// libraries (all of which every Lambda image has, so none is ever covered).
const MOUNT_SCRIPT: &str = r#"set -e
task=$1; empty=$2; shift 2
while [ "$1" != -- ]; do
    mount -t tmpfs -o ro,size=4k,mode=0755 coldpack-hidden "$1" ||
        { echo "coldpack run: cannot hide $1" >&2; exit 125; }
    shift
done
shift
mount --bind "$task" "$task"
mount -o remount,bind,ro "$task"
while [ "$1" != -- ]; do
    mount --bind "$empty" "$1" || { echo "coldpack run: cannot hide $1" >&2; exit 125; }
    shift
done
shift
exec "$@"
"#;

/// Where this machine's loader finds libraries on its own: a library the tree needs
/// and no Lambda image has is covered here, so that the runtime cannot fall back on
/// this machine's copy (Debian's `libpython3.11.so.1.0` for a pyenv Python, say).
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/lib",
];

/// Directories of this machine that stay visible whatever the tree names: what the
/// runtime needs to run here at all (loader, libc, shell), and the roots above them.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/etc",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/tmp",
    "/var/tmp",
];

/// How starts are isolated from this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Running as root: a private mount namespace.
    Root,
    /// Not root: user namespaces, the bootstrap back under this uid and gid.
    User { uid: u32, gid: u32 },
    /// No namespace: the reason.
    None(String),
}

impl Isolation {
    /// The best isolation this machine allows, tried once with `true`.
    pub fn probe() -> Isolation {
        let Ok(me) = fs::metadata("/proc/self") else {
            return Isolation::None("cannot tell who runs coldpack (/proc/self)".into());
        };
        let isolation = if me.uid() == 0 {
            Isolation::Root
        } else {
            Isolation::User {
                uid: me.uid(),
                gid: me.gid(),
            }
        };
        let mut probe = isolation.namespace();
        probe.arg("--").args(isolation.back_to_user()).arg("true");
        match probe.stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => isolation,
            Ok(out) => Isolation::None(format!(
                "`unshare` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Isolation::None(format!("cannot run `unshare` (util-linux): {e}")),
        }
    }

    /// `unshare` with the namespaces this isolation needs.
    fn namespace(&self) -> Command {
        let mut command = Command::new("unshare");
        if let Isolation::User { .. } = self {
            command.args(["--user", "--map-root-user"]);
        }
        command.args(["--mount", "--propagation", "private"]);
        command
    }

    /// The nested user namespace that gives the bootstrap back its own uid and gid.
    fn back_to_user(&self) -> Vec<OsString> {
        match self {
            Isolation::User { uid, gid } => vec![
                "unshare".into(),
                "--user".into(),
                format!("--map-user={uid}").into(),
                format!("--map-group={gid}").into(),
                "--".into(),
            ],
            _ => Vec::new(),
        }
    }

    /// The command that starts `bootstrap` with what `hidden` names covered and `task`
    /// read-only.
    pub fn command(&self, bootstrap: &Path, task: &Path, hidden: &Hidden) -> Command {
        if let Isolation::None(_) = self {
            return Command::new(bootstrap);
        }
        let mut command = self.namespace();
        command
            .args(["--", "sh", "-c", MOUNT_SCRIPT, "coldpack-run"])
            .arg(task)
            .arg(&hidden.empty)
            .args(&hidden.dirs)
            .arg("--")
            .args(&hidden.files)
            .arg("--")
            .args(self.back_to_user())
            .arg(bootstrap);
        command
    }
}

/// What each start covers.
#[derive(Debug, Default)]
pub struct Hidden {
    /// Covered with an empty read-only tmpfs.
    pub dirs: Vec<PathBuf>,
    /// Library files, covered with `empty`.
    pub files: Vec<PathBuf>,
    /// An empty read-only file.
    pub empty: PathBuf,
}

/// This machine's copies of `libraries` in `dirs`, as real files, except those under
/// directories already `hidden`.
pub fn library_files(libraries: &[Vec<u8>], dirs: &[&str], hidden: &[PathBuf]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = libraries
        .iter()
        .flat_map(|name| {
            dirs.iter()
                .map(move |dir| Path::new(dir).join(std::ffi::OsStr::from_bytes(name)))
        })
        .filter_map(|path| fs::canonicalize(path).ok())
        .filter(|file| file.is_file() && !hidden.iter().any(|dir| file.starts_with(dir)))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// What to cover and what to leave visible of the paths the tree names outside
/// itself (`compat::outside_paths`): a directory is covered, a file by its
/// directory; what does not exist here needs nothing. `keep` are paths that must
/// stay reachable (the task root, the cache).
pub fn to_hide(paths: &[PathBuf], keep: &[&Path]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut hide: Vec<PathBuf> = Vec::new();
    let mut visible: Vec<PathBuf> = Vec::new();
    for path in paths {
        let Ok(real) = fs::canonicalize(path) else {
            continue;
        };
        let dir = if real.is_dir() {
            real
        } else {
            match real.parent() {
                Some(parent) => parent.to_owned(),
                None => continue,
            }
        };
        let needed = SYSTEM_DIRS
            .iter()
            .map(Path::new)
            .chain(keep.iter().copied())
            .any(|system| system.starts_with(&dir));
        let list = if needed { &mut visible } else { &mut hide };
        if !list.contains(&dir) {
            list.push(dir);
        }
    }
    hide.sort();
    // A directory under one already covered is gone with it.
    let covered = hide.clone();
    hide.retain(|dir| !covered.iter().any(|c| c != dir && dir.starts_with(c)));
    visible.sort();
    (hide, visible)
}

/// Takes the write bits off everything under `root`, directories last: the deployment
/// is read-only on Lambda.
pub fn make_read_only(root: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        for item in fs::read_dir(root)? {
            make_read_only(&item?.path())?;
        }
    }
    let mut permissions = meta.permissions();
    permissions.set_readonly(true);
    fs::set_permissions(root, permissions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_and_the_sandbox_stay_visible() {
        let scratch = std::env::temp_dir();
        let paths = [
            PathBuf::from("/etc/hostname"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu"),
            PathBuf::from("/usr"),
            PathBuf::from("/nonexistent/coldpack/lib"),
            scratch.clone(),
        ];
        let (hide, visible) = to_hide(&paths, &[&scratch.join("task")]);
        assert!(hide.is_empty(), "{hide:?}");
        assert!(visible.contains(&PathBuf::from("/etc")), "{visible:?}");
        assert!(visible.contains(&PathBuf::from("/usr")), "{visible:?}");
        assert!(!visible.iter().any(|v| v.starts_with("/nonexistent")));
    }

    #[test]
    fn libraries_are_found_as_real_files_outside_hidden_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (lib, hidden) = (dir.path().join("lib"), dir.path().join("hidden"));
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(&hidden).unwrap();
        fs::write(lib.join("libx.so.1.0"), b"").unwrap();
        std::os::unix::fs::symlink("libx.so.1.0", lib.join("libx.so.1")).unwrap();
        fs::write(hidden.join("liby.so"), b"").unwrap();
        let dirs = [lib.to_str().unwrap(), hidden.to_str().unwrap()];
        let names = [
            b"libx.so.1".to_vec(),
            b"liby.so".to_vec(),
            b"libz.so".to_vec(),
        ];
        let files = library_files(&names, &dirs, &[fs::canonicalize(&hidden).unwrap()]);
        assert_eq!(
            files,
            vec![fs::canonicalize(lib.join("libx.so.1.0")).unwrap()]
        );
    }

    #[test]
    fn a_directory_inside_another_is_covered_once() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("lib/python");
        fs::create_dir_all(&inner).unwrap();
        fs::write(dir.path().join("lib/libx.so"), b"").unwrap();
        let paths = [
            inner,
            dir.path().join("lib/libx.so"),
            dir.path().join("lib"),
        ];
        let (hide, visible) = to_hide(&paths, &[]);
        let lib = fs::canonicalize(dir.path().join("lib")).unwrap();
        assert_eq!(hide, vec![lib]);
        assert!(visible.is_empty());
    }
}
