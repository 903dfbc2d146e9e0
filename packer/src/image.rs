//! The Lambda images a function can run on, as data: for each runtime and
//! architecture, the dynamic loader, the libraries that loader finds in the image, and
//! the highest symbol version of each family (glibc's `GLIBC_`, libstdc++'s `GLIBCXX_`
//! and `CXXABI_`, libgcc's `GCC_`) they define. The data lives in `packer/images/`,
//! one file per image that names its source and date, and is carried inside
//! coldpack; what is inferred rather than listed is said there.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{Arch, Runtime};

/// glibc version names that carry no number, and the release that introduced them.
/// `GLIBC_PRIVATE` is left out: only glibc's own libraries use it.
const GLIBC_MARKERS: &[(&str, &str)] = &[
    // Objects linked with `-z pack-relative-relocs` (binutils 2.38+) need it.
    ("GLIBC_ABI_DT_RELR", "2.36"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    runtime: String,
    arch: String,
    source: String,
    date: String,
    /// What is inferred rather than listed: for people, but required in every file.
    #[serde(rename = "notes")]
    _notes: Vec<String>,
    loaders: Vec<String>,
    libraries: Vec<String>,
    versions: BTreeMap<String, String>,
}

/// One image, read from its file.
#[derive(Debug)]
pub struct Image {
    pub runtime: Runtime,
    /// Absolute paths of the dynamic loader the image has.
    pub loaders: Vec<String>,
    libraries: HashSet<String>,
    /// Family (`GLIBC`) to the highest version the image defines, as text and numbers.
    versions: BTreeMap<String, (String, Vec<u32>)>,
    /// Where the data comes from, and when it was taken.
    pub source: String,
    pub date: String,
}

impl Image {
    pub fn load(runtime: Runtime, arch: Arch) -> Result<Image> {
        let text = match (runtime, arch) {
            (Runtime::ProvidedAl2023, Arch::X86_64) => {
                include_str!("../images/provided.al2023-x86_64.toml")
            }
            (Runtime::ProvidedAl2023, Arch::Arm64) => {
                include_str!("../images/provided.al2023-arm64.toml")
            }
            (Runtime::ProvidedAl2, Arch::X86_64) => {
                include_str!("../images/provided.al2-x86_64.toml")
            }
            (Runtime::ProvidedAl2, Arch::Arm64) => {
                include_str!("../images/provided.al2-arm64.toml")
            }
        };
        let name = format!("{}-{}", runtime.as_str(), arch.as_str());
        let file: File = toml::from_str(text)
            .with_context(|| format!("coldpack's data for the image {name} is not valid"))?;
        if file.runtime != runtime.as_str() || file.arch != arch.as_str() {
            anyhow::bail!("coldpack's data for the image {name} describes another image");
        }
        let mut versions = BTreeMap::new();
        for (family, text) in file.versions {
            let numbers = numbers(&text)
                .with_context(|| format!("version {text:?} in coldpack's data for {name}"))?;
            versions.insert(family, (text, numbers));
        }
        Ok(Image {
            runtime,
            loaders: file.loaders,
            libraries: file.libraries.into_iter().collect(),
            versions,
            source: file.source,
            date: file.date,
        })
    }

    /// Whether the image's loader finds a library of this name without help.
    pub fn has_library(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|name| self.libraries.contains(name))
    }

    /// The image's version of a family, e.g. "2.34" for `GLIBC`.
    #[cfg(test)]
    pub fn version_of(&self, family: &str) -> Option<&str> {
        self.versions.get(family).map(|(text, _)| text.as_str())
    }

    /// When the symbol version `name` (`GLIBC_2.35`) is newer than the highest of its
    /// family that the image defines: that family and the image's version. `None` when
    /// the image has it, or when the family is not one the data knows.
    pub fn lacks(&self, name: &[u8]) -> Option<(&str, &str)> {
        let (family, wanted) = version_name(name)?;
        let (family, (have, numbers)) = self.versions.get_key_value(family.as_str())?;
        (wanted > *numbers).then_some((family.as_str(), have.as_str()))
    }
}

/// `GLIBC_2.35` as ("GLIBC", [2, 35]): the family is what comes before the first `_`
/// that a digit follows.
pub fn version_name(name: &[u8]) -> Option<(String, Vec<u32>)> {
    let name = std::str::from_utf8(name).ok()?;
    if let Some(&(_, release)) = GLIBC_MARKERS.iter().find(|(marker, _)| *marker == name) {
        return Some(("GLIBC".into(), numbers(release)?));
    }
    let split = name
        .char_indices()
        .find(|&(at, c)| c == '_' && name[at + 1..].starts_with(|d: char| d.is_ascii_digit()))?
        .0;
    Some((name[..split].to_string(), numbers(&name[split + 1..])?))
}

fn numbers(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_reads_and_knows_its_glibc_and_loader() {
        for (runtime, glibc) in [
            (Runtime::ProvidedAl2023, "2.34"),
            (Runtime::ProvidedAl2, "2.26"),
        ] {
            for arch in [Arch::X86_64, Arch::Arm64] {
                let image = Image::load(runtime, arch).unwrap();
                assert_eq!(image.version_of("GLIBC"), Some(glibc));
                assert!(image.has_library(b"libc.so.6"));
                assert!(image.has_library(b"libstdc++.so.6"));
                let loader = image.loaders[0].rsplit('/').next().unwrap();
                assert!(image.has_library(loader.as_bytes()), "{runtime:?} {arch:?}");
                assert!(!image.date.is_empty() && !image.source.is_empty());
            }
        }
    }

    #[test]
    fn versions_compare_by_number_within_their_family() {
        let image = Image::load(Runtime::ProvidedAl2023, Arch::X86_64).unwrap();
        assert_eq!(image.lacks(b"GLIBC_2.35"), Some(("GLIBC", "2.34")));
        assert_eq!(image.lacks(b"GLIBC_2.34"), None);
        assert_eq!(image.lacks(b"GLIBC_2.2.5"), None);
        assert_eq!(image.lacks(b"GLIBC_ABI_DT_RELR"), Some(("GLIBC", "2.34")));
        assert_eq!(image.lacks(b"GLIBC_PRIVATE"), None);
        assert_eq!(image.lacks(b"GLIBCXX_3.4.33"), None);
        assert_eq!(image.lacks(b"CXXABI_1.3.16"), Some(("CXXABI", "1.3.15")));
        assert_eq!(image.lacks(b"OPENSSL_3.0.0"), None, "an unknown family");
        let al2 = Image::load(Runtime::ProvidedAl2, Arch::X86_64).unwrap();
        assert_eq!(al2.lacks(b"GLIBC_2.28"), Some(("GLIBC", "2.26")));
        assert_eq!(al2.lacks(b"GLIBCXX_3.4.29"), Some(("GLIBCXX", "3.4.24")));
        assert_eq!(
            version_name(b"CXXABI_TM_1"),
            Some(("CXXABI_TM".into(), vec![1]))
        );
    }
}
