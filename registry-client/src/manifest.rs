//! Manifest media types and telling a fetched manifest's kind: OCI and Docker schema 2 image
//! manifests, OCI indexes and Docker manifest lists.

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of a manifest request: every kind strata reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest strata accepts (the distribution spec suggests registries take 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A parsed manifest.
#[derive(Debug)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
}

/// Parses `bytes` as the manifest kind that `content_type` (the registry's `Content-Type`, or
/// the store's descriptor) or else the document's own `mediaType` says. Returns the media type
/// too.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<(String, Manifest), String> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON manifest: {e}"))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    if probe.schema_version == Some(1)
        || header
            .as_deref()
            .is_some_and(|h| DOCKER_SCHEMA1.contains(&h))
    {
        return Err("Docker schema 1 manifests are deprecated and not supported: push the image again with a current tool".into());
    }
    let media_type = match (header, probe.media_type) {
        (Some(h), _) => h,
        (None, Some(m)) => m,
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) if probe.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => return Err("it has no media type".into()),
    };
    let manifest = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Manifest::Index(Box::new(
            serde_json::from_slice(bytes).map_err(|e| format!("malformed index: {e}"))?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => Manifest::Image(Box::new(
            serde_json::from_slice(bytes).map_err(|e| format!("malformed manifest: {e}"))?,
        )),
        other => return Err(format!("unsupported manifest media type {other}")),
    };
    Ok((media_type, manifest))
}

/// Whether a layer media type is one strata extracts (tar, gzip, zstd; OCI or Docker).
pub fn is_supported_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn kinds_by_header_then_body() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"{D}"}},"layers":[]}}"#
        );
        let (mt, m) = parse(
            image.as_bytes(),
            Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
        )
        .unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        assert!(matches!(m, Manifest::Image(_)));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{D}"}}]}}"#
        );
        let (mt, m) = parse(index.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(mt, OCI_INDEX);
        assert!(matches!(m, Manifest::Index(_)));
    }

    #[test]
    fn schema1_and_garbage_are_refused_with_a_reason() {
        let e = parse(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, None).unwrap_err();
        assert!(e.contains("schema 1"), "{e}");
        assert!(parse(b"<html>", None).unwrap_err().contains("not a JSON"));
        assert!(
            parse(b"{}", Some("application/x-foo"))
                .unwrap_err()
                .contains("unsupported")
        );
    }
}
