//! `coldpack`, the build-time half: walks a runtime directory and writes the packed
//! `bootstrap` that Lambda runs, and the zip that carries it; reads one back for
//! `inspect` and `verify`; starts one locally for `run`.
//!
//! The payload format itself lives in the bootstrap crate (`coldpack_bootstrap::
//! payload` and `::manifest`), next to the reader that must never misread it.

pub mod budget;
pub mod cli;
pub mod config;
pub mod inspect;
pub mod lambda_zip;
pub mod lint;
pub mod pack;
pub mod progress;
pub mod run;
pub mod stock;
pub mod walk;

/// The static x86_64 bootstrap built by `build.rs`, carried inside `coldpack`.
pub const STOCK_BOOTSTRAP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap-x86_64"));
/// The static arm64 one: empty when `coldpack` was built without the aarch64 cross
/// toolchain ([`stock::bootstrap`] then says what to install).
pub const STOCK_BOOTSTRAP_ARM64: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bootstrap-arm64"));
