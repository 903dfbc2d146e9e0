//! Hand the process over to the runtime.
//!
//! `execve` rather than a child process: the runtime inherits the pid Lambda watches,
//! the environment Lambda set (`AWS_LAMBDA_RUNTIME_API`, `_HANDLER`, credentials, …),
//! the working directory and stdio, and the bootstrap costs nothing after this. By
//! now every thread has joined and every file the bootstrap wrote is closed, so the
//! kernel cannot refuse the entrypoint with `ETXTBSY`. The name's lock was released
//! when `prepare` returned, just before this; the tree's shared lock, taken while the
//! name's lock was still held, is the one descriptor opened without `O_CLOEXEC`, so
//! the runtime keeps it and no other start sweeps the tree it runs from.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, ErrorKind};
use crate::launch::Launch;

const ROOT_PLACEHOLDER: &[u8] = b"{root}";

/// Replaces every `{root}` in `text` with `root`.
pub fn substitute(text: &[u8], root: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest
        .windows(ROOT_PLACEHOLDER.len())
        .position(|w| w == ROOT_PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(root);
        rest = &rest[at + ROOT_PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    OsStr::from_bytes(&out).to_owned()
}

/// Execs the entrypoint under `root` with the recorded arguments, then `extra` (the
/// bootstrap's own arguments), and the recorded variables added to the environment.
/// Returns only if the exec failed.
pub fn exec(root: &Path, launch: &Launch, extra: impl Iterator<Item = OsString>) -> Error {
    let root_bytes = root.as_os_str().as_bytes();
    let program = root.join(OsStr::from_bytes(&launch.entrypoint));
    let err = Command::new(&program)
        .args(launch.args.iter().map(|arg| substitute(arg, root_bytes)))
        .args(extra)
        .envs(
            launch
                .env
                .iter()
                .map(|(key, value)| (OsStr::from_bytes(key), substitute(value, root_bytes))),
        )
        .exec();
    Error::new(
        ErrorKind::Exec,
        format!("cannot exec entrypoint {}: {err}", program.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_replaced() {
        assert_eq!(
            substitute(b"{root}/lib:{root}/x", b"/tmp/r"),
            OsString::from("/tmp/r/lib:/tmp/r/x")
        );
        assert_eq!(substitute(b"plain", b"/tmp/r"), OsString::from("plain"));
        assert_eq!(substitute(b"{root", b"/tmp/r"), OsString::from("{root"));
    }
}
