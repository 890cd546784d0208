//! Hand-made OCI image layouts for skopeo to push: images of several layers of incompressible
//! files, for any platform, and indexes over them.

use std::io::Write;
use std::path::Path;

use layerfs::digest::digest_of;
use serde_json::{Value, json};

/// One image: its platform and its layers, each a list of (path, content).
pub struct Image {
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
    pub layers: Vec<Vec<(String, Vec<u8>)>>,
}

/// `n` bytes that do not compress (xorshift), different for each `seed`.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put_blob(dir: &Path, data: &[u8]) -> Value {
    let digest = digest_of(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(digest.digest()), data).unwrap();
    json!({"digest": digest.to_string(), "size": data.len()})
}

fn layer_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, &content[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes `image`'s blobs into the layout at `dir`; returns its manifest descriptor.
pub fn write_image(dir: &Path, image: &Image) -> Value {
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for files in &image.layers {
        let tar = layer_tar(files);
        diff_ids.push(digest_of(&tar).to_string());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut d = put_blob(dir, &gz.finish().unwrap());
        d["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
        layers.push(d);
    }
    let mut config = json!({
        "architecture": image.architecture, "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = image.variant {
        config["variant"] = json!(v);
    }
    let mut config_desc = put_blob(dir, config.to_string().as_bytes());
    config_desc["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc, "layers": layers,
    });
    let mut desc = put_blob(dir, manifest.to_string().as_bytes());
    desc["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
    let mut platform = json!({"architecture": image.architecture, "os": "linux"});
    if let Some(v) = image.variant {
        platform["variant"] = json!(v);
    }
    desc["platform"] = platform;
    desc
}

/// Writes a layout at `dir` whose `index.json` names `tag` for `images` (one image: its
/// manifest; several: an index over them).
pub fn write_layout(dir: &Path, tag: &str, images: &[Image]) -> String {
    let mut descs: Vec<Value> = images.iter().map(|i| write_image(dir, i)).collect();
    let mut top = if descs.len() == 1 {
        descs.pop().unwrap()
    } else {
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs});
        let mut d = put_blob(dir, index.to_string().as_bytes());
        d["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        d
    };
    top.as_object_mut().unwrap().remove("platform");
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [top]}).to_string(),
    )
    .unwrap();
    top["digest"].as_str().unwrap().to_owned()
}
