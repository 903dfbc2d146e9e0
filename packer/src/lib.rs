//! `coldpack`, the build-time half: walks a runtime directory and writes the packed
//! `bootstrap` that Lambda runs; reads one back for `inspect` and `verify`.
//!
//! The payload format itself lives in the bootstrap crate (`coldpack_bootstrap::
//! payload` and `::manifest`), next to the reader that must never misread it.

pub mod cli;
pub mod inspect;
pub mod pack;
pub mod walk;

/// The static bootstrap built by `build.rs`, carried inside `coldpack`.
pub const STOCK_BOOTSTRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap"));
