//! The stock bootstraps this `coldpack` carries, one for each machine Lambda runs that
//! it was built with a toolchain for (see `build.rs`), and which machine a pack is
//! for: `--arch` when given, else the one the tree's own ELF files are built for.

use anyhow::{bail, Result};

use crate::cli::Arch;
use crate::lint::{listed, Elf};

/// What `coldpack --version` prints: the version and the machines it can pack for
/// without `--bootstrap`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (stock bootstraps: ",
    env!("COLDPACK_STOCK_ARCHES"),
    ")"
);

/// The stock bootstrap for `arch`, or a refusal that says what to install to get it.
pub fn bootstrap(arch: Arch) -> Result<&'static [u8]> {
    let (bytes, missing) = match arch {
        Arch::X86_64 => (
            crate::STOCK_BOOTSTRAP,
            include_str!(concat!(env!("OUT_DIR"), "/bootstrap-x86_64.missing")),
        ),
        Arch::Arm64 => (
            crate::STOCK_BOOTSTRAP_ARM64,
            include_str!(concat!(env!("OUT_DIR"), "/bootstrap-arm64.missing")),
        ),
    };
    if bytes.is_empty() {
        bail!("no stock bootstrap for --arch {}: {missing}", arch.as_str());
    }
    Ok(bytes)
}

/// The machines this `coldpack` carries a bootstrap for.
pub fn carried() -> Vec<Arch> {
    [Arch::X86_64, Arch::Arm64]
        .into_iter()
        .filter(|&arch| bootstrap(arch).is_ok())
        .collect()
}

/// The machine a pack is for: `given` (`--arch`) if any; else the one the tree's ELF
/// files (`elf`, entry by entry, named by `path_of(index)`) are built for when they
/// agree, and x86_64, Lambda's default, for a tree without any. ELF files of both
/// machines are refused: only the user knows which one the function is.
pub fn choose_arch(
    given: Option<Arch>,
    elf: &[Option<Elf>],
    path_of: impl Fn(usize) -> String,
) -> Result<Arch> {
    if let Some(arch) = given {
        return Ok(arch);
    }
    let built_for = |arch: Arch| -> Vec<String> {
        (0..elf.len())
            .filter(|&i| elf[i].is_some_and(|e| e.machine == arch.elf_machine()))
            .map(&path_of)
            .collect()
    };
    let (x86_64, arm64) = (built_for(Arch::X86_64), built_for(Arch::Arm64));
    match (x86_64.is_empty(), arm64.is_empty()) {
        (_, true) => Ok(Arch::X86_64),
        (true, false) => Ok(Arch::Arm64),
        (false, false) => bail!(
            "the tree holds ELF files built for x86_64 ({}) and for arm64 ({}): say which \
             machine the function is with --arch x86_64 or --arch arm64",
            listed(&x86_64),
            listed(&arm64)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(given: Option<Arch>, machines: &[Option<u16>]) -> Result<Arch> {
        let elf: Vec<Option<Elf>> = machines
            .iter()
            .map(|m| m.map(|machine| Elf { machine }))
            .collect();
        choose_arch(given, &elf, |i| format!("lib/f{i}"))
    }

    #[test]
    fn the_tree_decides_unless_arch_is_given() {
        let (x86, arm) = (Arch::X86_64.elf_machine(), Arch::Arm64.elf_machine());
        let riscv = 243;
        for (machines, want) in [
            (vec![], Arch::X86_64),
            (vec![None, None], Arch::X86_64),
            (vec![Some(x86), None], Arch::X86_64),
            (vec![None, Some(arm), Some(arm)], Arch::Arm64),
            // Machines Lambda does not run are left to the lint.
            (vec![Some(arm), Some(riscv)], Arch::Arm64),
        ] {
            assert_eq!(choose(None, &machines).unwrap(), want, "{machines:?}");
        }
        let mixed = [Some(x86), Some(arm)];
        let refused = choose(None, &mixed).unwrap_err().to_string();
        assert!(
            refused.contains("x86_64 (lib/f0)")
                && refused.contains("arm64 (lib/f1)")
                && refused.contains("--arch"),
            "{refused}"
        );
        assert_eq!(choose(Some(Arch::Arm64), &mixed).unwrap(), Arch::Arm64);
    }
}
