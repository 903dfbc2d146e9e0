//! `coldpack`, the build-time half: walks a runtime directory and writes the packed
//! `bootstrap` that Lambda runs, and the zip that carries it; reads one back for
//! `inspect` and `verify`; starts one locally for `run`.
//!
//! The payload format itself lives in the bootstrap crate (`coldpack_bootstrap::
//! payload` and `::manifest`), next to the reader that must never misread it.

pub mod budget;
pub mod cli;
pub mod compat;
pub mod config;
pub mod elf;
pub mod image;
pub mod inspect;
pub mod lambda_zip;
pub mod lint;
pub mod pack;
pub mod progress;
pub mod run;
pub mod walk;

/// The static bootstrap built by `build.rs`, carried inside `coldpack`.
pub const STOCK_BOOTSTRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap"));
