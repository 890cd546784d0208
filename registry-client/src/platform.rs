//! Platforms (`linux/arm64/v8`) and picking one image out of a multi-platform index.

use std::fmt;

use layerfs::config::host_architecture;
use oci_spec::image::Descriptor;

use crate::error::{Error, Result};

/// An OS, an architecture and maybe a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform.
    pub fn host() -> Self {
        let architecture = host_architecture().to_owned();
        let variant = (architecture == "arm").then(|| "v7".to_owned());
        Platform {
            os: "linux".to_owned(),
            architecture,
            variant,
        }
    }

    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        match parts[..] {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: Some(variant.to_ascii_lowercase()),
            }),
            _ => Err(Error::InvalidPlatform(s.to_owned())),
        }
    }

    /// Whether an image for `os`/`architecture`/`variant` runs here as this platform.
    /// A missing variant matches the architecture's default one (`arm64` is `arm64/v8`).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let have = variant
            .filter(|v| !v.is_empty())
            .or(if architecture == "arm64" {
                Some("v8")
            } else {
                None
            });
        self.os == os
            && self.architecture == architecture
            && self
                .variant
                .as_deref()
                .is_none_or(|want| have == Some(want))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The platform an index entry is for, as `os/arch[/variant]`.
pub fn describe(d: &Descriptor) -> Option<String> {
    let p = d.platform().as_ref()?;
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

/// Picks the manifest for `wanted` from an index's entries. Attestation manifests
/// (`unknown/unknown`) never match. On no match, the error lists what the index has.
pub fn select<'a>(
    manifests: &'a [Descriptor],
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    let candidates = manifests.iter().filter(|d| {
        d.platform().as_ref().is_some_and(|p| {
            wanted.matches(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            )
        })
    });
    // An exact variant beats a default one (an index may list arm64 and arm64/v8 both).
    let mut best = None;
    for d in candidates {
        let exact = d.platform().as_ref().and_then(|p| p.variant().clone()) == wanted.variant;
        if best.is_none() || exact {
            best = Some(d);
            if exact {
                break;
            }
        }
    }
    best.ok_or_else(|| Error::NoMatchingPlatform {
        reference: reference.to_owned(),
        wanted: wanted.to_string(),
        available: {
            let list: Vec<String> = manifests
                .iter()
                .filter_map(describe)
                .filter(|p| p != "unknown/unknown")
                .collect();
            if list.is_empty() {
                "no platforms".to_owned()
            } else {
                list.join(", ")
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ImageIndex;

    fn index() -> ImageIndex {
        let d = |n: char| format!("sha256:{}", n.to_string().repeat(64));
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": d('a'),
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": d('b'),
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": d('c'),
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": d('d'),
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": d('e'),
                 "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }))
        .unwrap()
    }

    fn pick(p: &str) -> Result<char> {
        let idx = index();
        let d = select(idx.manifests(), &Platform::parse(p).unwrap(), "img")?;
        Ok(d.digest().digest().chars().next().unwrap())
    }

    #[test]
    fn picks_by_os_arch_and_variant() {
        assert_eq!(pick("linux/amd64").unwrap(), 'a');
        assert_eq!(pick("linux/arm/v7").unwrap(), 'c');
        assert_eq!(pick("linux/arm/v6").unwrap(), 'b');
        assert_eq!(pick("linux/arm64").unwrap(), 'd');
        assert_eq!(pick("linux/arm64/v8").unwrap(), 'd');
    }

    #[test]
    fn no_match_lists_what_there_is() {
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm/v7") && !e.contains("unknown"),
            "{e}"
        );
        assert!(pick("windows/amd64").is_err());
    }

    #[test]
    fn parse_refuses_malformed_platforms() {
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
    }
}
