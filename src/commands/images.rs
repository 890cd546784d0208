//! `images`, `inspect`, `history`, `tag`, `rmi`: the local images.

use std::process::ExitCode;

use anyhow::Context as _;
use builder::glob::Glob;
use layerfs::reference::Reference;
use oci_spec::image::Digest;

use super::Context;
use crate::cli::{
    HistoryArgs, ImagesArgs, InspectArgs, InspectFormat, ListFormat, RmiArgs, TagArgs,
};

pub fn images(ctx: &Context, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    // `busybox` is every tag of docker.io/library/busybox, `busybox:1.36` just that one.
    let filter = args
        .filter
        .as_deref()
        .map(|f| -> anyhow::Result<(Reference, bool)> {
            let last = f.rsplit('/').next().unwrap_or(f);
            let tagged = last.split('@').next().is_some_and(|t| t.contains(':'));
            Ok((Reference::parse(f)?, tagged))
        })
        .transpose()?;
    let filters = ImageFilters::parse(&args.filters)?;
    let mut rows = Vec::new();
    for record in store.records()? {
        if let Some((want, tagged)) = &filter {
            let matches = record.name.as_ref().is_some_and(|n| {
                n.registry() == want.registry()
                    && n.repository() == want.repository()
                    && (!tagged || n.tag() == want.tag())
                    && want.digest().is_none_or(|d| d == record.manifest.digest())
            });
            if !matches {
                continue;
            }
        }
        let image = store
            .image_for_manifest(&record.manifest)
            .with_context(|| format!("reading image {}", record.manifest.digest()))?;
        if !filters.pass(record.name.as_ref(), &image) {
            continue;
        }
        let size: u64 = image.manifest.layers().iter().map(|l| l.size()).sum();
        rows.push((record.name, image, size));
    }
    let shown_id = |image: &layerfs::store::Image| {
        if args.no_trunc {
            image.id().to_string()
        } else {
            image.id().digest()[..12].to_owned()
        }
    };
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for (_, image, _) in &rows {
            if seen.insert(image.id().clone()) {
                ctx.printer.out(shown_id(image));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        ListFormat::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(name, image, size)| {
                    serde_json::json!({
                        "name": name.as_ref().map(ToString::to_string),
                        "id": image.id().to_string(),
                        "digest": image.manifest_digest.to_string(),
                        "created": image.config.created,
                        "size": size,
                    })
                })
                .collect();
            ctx.printer
                .out(serde_json::to_string_pretty(&list).expect("JSON values serialize"));
        }
        ListFormat::Table => {
            let digest_header = if args.digests {
                format!("{:<72}", "DIGEST")
            } else {
                String::new()
            };
            ctx.printer.out(format!(
                "{:<40} {:<16} {digest_header}{:<14} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
            ));
            for (name, image, size) in rows {
                let (repo, tag) = match &name {
                    Some(r) => (r.familiar_name(), r.tag().unwrap_or("<none>").to_owned()),
                    None => ("<none>".to_owned(), "<none>".to_owned()),
                };
                let digest = if args.digests {
                    format!("{:<72}", image.manifest_digest.to_string())
                } else {
                    String::new()
                };
                ctx.printer.out(format!(
                    "{repo:<40} {tag:<16} {digest}{:<14} {:>10}",
                    shown_id(&image),
                    human_size(size)
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `images --filter`s, as docker applies them.
#[derive(Default)]
struct ImageFilters {
    dangling: Option<bool>,
    /// Or'ed.
    references: Vec<Glob>,
    /// And'ed: a key, and the value it must have if given.
    labels: Vec<(String, Option<String>)>,
}

impl ImageFilters {
    fn parse(specs: &[String]) -> anyhow::Result<ImageFilters> {
        let mut f = ImageFilters::default();
        for spec in specs {
            let bad = || {
                anyhow::anyhow!(
                    "--filter {spec}: expected dangling=true|false, reference=PATTERN or label=KEY[=VALUE]"
                )
            };
            let (key, value) = spec.split_once('=').ok_or_else(bad)?;
            match key {
                "dangling" => {
                    f.dangling = Some(match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    });
                }
                "reference" => f
                    .references
                    .push(Glob::path(value).with_context(|| format!("--filter {spec}"))?),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (value.to_owned(), None),
                }),
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    fn pass(&self, name: Option<&Reference>, image: &layerfs::store::Image) -> bool {
        if self.dangling.is_some_and(|d| d != name.is_none()) {
            return false;
        }
        if !self.references.is_empty() {
            let Some(name) = name else {
                return false;
            };
            let (familiar, repo) = (name.familiar(), name.familiar_name());
            if !self
                .references
                .iter()
                .any(|g| g.matches(&familiar) || g.matches(&repo))
            {
                return false;
            }
        }
        let labels = image.config.config.labels.as_ref();
        self.labels.iter().all(|(k, v)| {
            labels
                .and_then(|l| l.get(k))
                .is_some_and(|have| v.as_ref().is_none_or(|v| v == have))
        })
    }
}

/// Sizes as docker prints them (decimal units, three significant digits).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[unit])
}

pub fn inspect(ctx: &Context, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = args.image.strip_prefix(super::registry::DOCKER_TRANSPORT) {
        return super::registry::inspect_remote(ctx, args, remote);
    }
    let store = ctx.store()?;
    let image = store.resolve_image(&args.image)?;
    match &args.format {
        InspectFormat::Id => ctx.printer.out(image.id()),
        InspectFormat::Digest => ctx.printer.out(&image.manifest_digest),
        InspectFormat::Raw => {
            ctx.printer
                .out_bytes(&store.read_blob(&image.manifest_digest)?);
        }
        InspectFormat::Config => {
            print_json(ctx, &store.read_blob(image.id())?, image.id())?;
        }
        InspectFormat::Manifest => {
            let bytes = store.read_blob(&image.manifest_digest)?;
            print_json(ctx, &bytes, &image.manifest_digest)?;
        }
        InspectFormat::Template(template) => {
            let config = store.read_blob(image.id())?;
            let manifest = store.read_blob(&image.manifest_digest)?;
            let view = DockerView {
                config: &config,
                manifest: &manifest,
                id: image.id(),
                digest: &image.manifest_digest,
                names: &image.names,
            };
            print_template(ctx, template, &view)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `docker image inspect` shows of an image, for `inspect --format '{{…}}'`.
pub(super) struct DockerView<'a> {
    /// The config and manifest blobs.
    pub config: &'a [u8],
    pub manifest: &'a [u8],
    pub id: &'a Digest,
    pub digest: &'a Digest,
    pub names: &'a [Reference],
}

impl DockerView<'_> {
    /// docker's fields (and podman's `Digest`, `Labels`) as one JSON object.
    fn to_value(&self) -> anyhow::Result<serde_json::Value> {
        let config: serde_json::Value = serde_json::from_slice(self.config)
            .with_context(|| format!("blob {} is not JSON", self.id))?;
        let manifest: serde_json::Value = serde_json::from_slice(self.manifest)
            .with_context(|| format!("blob {} is not JSON", self.digest))?;
        let size: u64 = manifest["layers"]
            .as_array()
            .map(|layers| layers.iter().filter_map(|l| l["size"].as_u64()).sum())
            .unwrap_or(0);
        let mut repo_digests: Vec<String> = self
            .names
            .iter()
            .map(|n| n.with_digest(self.digest.clone()).familiar())
            .collect();
        repo_digests.dedup();
        Ok(serde_json::json!({
            "Id": self.id.to_string(),
            "Digest": self.digest.to_string(),
            "RepoTags": self.names.iter().map(Reference::familiar).collect::<Vec<_>>(),
            "RepoDigests": repo_digests,
            "Created": config["created"],
            "Author": config["author"],
            "Architecture": config["architecture"],
            "Os": config["os"],
            "Variant": config["variant"],
            "Config": config["config"],
            "Labels": config["config"]["Labels"],
            "RootFS": {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]},
            "Size": size,
        }))
    }
}

/// Prints `template` rendered over `view` (a line, as docker prints it).
pub(super) fn print_template(
    ctx: &Context,
    template: &str,
    view: &DockerView<'_>,
) -> anyhow::Result<()> {
    ctx.printer
        .out(crate::template::render(template, &view.to_value()?)?);
    Ok(())
}

/// Prints the JSON document `bytes` (the blob `digest`) pretty.
pub(super) fn print_json(ctx: &Context, bytes: &[u8], digest: &Digest) -> anyhow::Result<()> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("blob {digest} is not JSON"))?;
    ctx.printer
        .out(serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    Ok(())
}

/// How many characters of a step's command `history` shows unless `--no-trunc`.
const CREATED_BY_WIDTH: usize = 45;

pub fn history(ctx: &Context, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let image = store.resolve_image(&args.image)?;
    // History entries that made a layer take the manifest's layers in order.
    let mut layers = image.manifest.layers().iter();
    let mut steps: Vec<(
        &layerfs::config::History,
        Option<&oci_spec::image::Descriptor>,
    )> = Vec::new();
    for h in &image.config.history {
        let layer = if h.empty_layer { None } else { layers.next() };
        steps.push((h, layer));
    }
    steps.reverse();
    match args.format {
        ListFormat::Json => {
            let list: Vec<serde_json::Value> = steps
                .iter()
                .map(|(h, layer)| {
                    serde_json::json!({
                        "created": h.created,
                        "created_by": h.created_by,
                        "comment": h.comment,
                        "empty_layer": h.empty_layer,
                        "layer": layer.map(|l| l.digest().to_string()),
                        "size": layer.map_or(0, |l| l.size()),
                    })
                })
                .collect();
            ctx.printer
                .out(serde_json::to_string_pretty(&list).expect("JSON values serialize"));
        }
        ListFormat::Table => {
            ctx.printer.out(format!(
                "{:<14} {:<20} {:<w$} {:>10}  COMMENT",
                "IMAGE",
                "CREATED",
                "CREATED BY",
                "SIZE",
                w = CREATED_BY_WIDTH
            ));
            for (i, (h, layer)) in steps.iter().enumerate() {
                let id = if i == 0 {
                    image.id().digest()[..12].to_owned()
                } else {
                    "<missing>".to_owned()
                };
                // RFC 3339 to the second, as `2026-11-22 17:18:07`.
                let created = h.created.as_deref().map_or(String::new(), |c| {
                    c.get(..19).unwrap_or(c).replacen('T', " ", 1)
                });
                let by = h.created_by.as_deref().unwrap_or("");
                let by = if args.no_trunc || by.chars().count() <= CREATED_BY_WIDTH {
                    by.to_owned()
                } else {
                    let cut: String = by.chars().take(CREATED_BY_WIDTH - 1).collect();
                    format!("{cut}…")
                };
                ctx.printer.out(format!(
                    "{id:<14} {created:<20} {by:<w$} {:>10}  {}",
                    human_size(layer.map_or(0, |l| l.size())),
                    h.comment.as_deref().unwrap_or(""),
                    w = CREATED_BY_WIDTH
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tag(ctx: &Context, args: &TagArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let image = store.resolve_image(&args.source)?;
    let targets = args
        .targets
        .iter()
        .map(|t| {
            let target = Reference::parse(t)?;
            anyhow::ensure!(
                target.digest().is_none(),
                "cannot tag as {target}: a name to tag with has no digest"
            );
            Ok(target)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let records = store.records()?;
    let manifest = records
        .iter()
        .find(|r| r.manifest.digest() == &image.manifest_digest)
        .map(|r| r.manifest.clone())
        .context("the image vanished from the store while tagging")?;
    for target in &targets {
        store.tag(target, &manifest)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(ctx: &Context, args: &RmiArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let mut failed = false;
    for what in &args.images {
        match store.remove_image(what, args.force) {
            Ok((untagged, deleted)) => {
                for name in untagged {
                    ctx.printer.out(format!("Untagged: {}", name.familiar()));
                }
                if let Some(id) = deleted {
                    ctx.printer.out(format!("Deleted: {id}"));
                }
            }
            Err(e) => {
                ctx.printer.error(&anyhow::Error::new(e));
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
