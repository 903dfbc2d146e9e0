//! The launch section: the payload's name and how to start the runtime.
//!
//! It is hashed on its own in the payload header and kept tiny, so that a warm start
//! that trusts the completion marker reads the header and this section and nothing
//! else: a few hundred bytes.

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// How to start the runtime once its tree is in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Names the cache directory's entries and the task part; `[A-Za-z0-9_-]`, so `.`
    /// can separate suffixes.
    pub name: String,
    /// Path of the executable inside the tree.
    pub entrypoint: Vec<u8>,
    /// Arguments placed before the ones the bootstrap itself receives; `{root}` is
    /// replaced by the tree's path.
    pub args: Vec<Vec<u8>>,
    /// Variables added to the environment the bootstrap received; `{root}` in values is
    /// replaced by the tree's path.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Launch {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.blob(self.name.as_bytes());
        w.blob(&self.entrypoint);
        w.u32(self.args.len() as u32);
        for arg in &self.args {
            w.blob(arg);
        }
        w.u32(self.env.len() as u32);
        for (key, value) in &self.env {
            w.blob(key);
            w.blob(value);
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Launch> {
        let mut r = Reader::new(bytes, "launch section");
        let name = String::from_utf8(r.blob()?.to_vec())
            .ok()
            .filter(|name| valid_name(name))
            .ok_or_else(|| Error::corrupt("payload name is not made of [A-Za-z0-9_-]"))?;
        let entrypoint = r.blob()?.to_vec();
        check_path(&entrypoint).map_err(|why| Error::corrupt(format!("entrypoint {why}")))?;
        let args = (0..r.count(4)?)
            .map(|_| Ok(r.blob()?.to_vec()))
            .collect::<Result<Vec<_>>>()?;
        let env = (0..r.count(8)?)
            .map(|_| Ok((r.blob()?.to_vec(), r.blob()?.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        for (key, _) in &env {
            if !valid_env_key(key) {
                return Err(Error::corrupt(format!(
                    "environment variable name {:?} is not valid",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        if args
            .iter()
            .chain(env.iter().map(|(_, v)| v))
            .any(|s| s.contains(&0))
        {
            return Err(Error::corrupt(
                "an argument or variable contains a NUL byte",
            ));
        }
        Ok(Launch {
            name,
            entrypoint,
            args,
            env,
        })
    }
}

/// A name the cache directory can use verbatim: `[A-Za-z0-9_-]`, 1 to 64 bytes.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An environment variable name the exec can pass on: non-empty, no `=` or NUL.
pub fn valid_env_key(key: &[u8]) -> bool {
    !key.is_empty() && !key.contains(&b'=') && !key.contains(&0)
}

/// Linux's `PATH_MAX` less the terminating NUL.
pub const MAX_PATH: usize = 4095;
/// Linux's `NAME_MAX`.
pub const MAX_NAME: usize = 255;

/// Checks that `path` is relative, made only of normal components, and fits Linux's
/// limits. Says why not, for the caller to put in context.
pub fn check_path(path: &[u8]) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.len() > MAX_PATH {
        return Err("is longer than 4095 bytes");
    }
    path.split(|&b| b == b'/').try_for_each(check_name)
}

/// Checks one path component: what a directory entry may be called.
pub fn check_name(name: &[u8]) -> std::result::Result<(), &'static str> {
    match name {
        b"" => Err("has an empty component (absolute, or `//`)"),
        b"." | b".." => Err("has a `.` or `..` component"),
        n if n.len() > MAX_NAME => Err("has a component over 255 bytes"),
        n if n.contains(&0) => Err("contains a NUL byte"),
        n if n.contains(&b'/') => Err("has a `/` in a name"),
        _ => Ok(()),
    }
}
