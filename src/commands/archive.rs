//! `save` and `load`: images to and from docker archives, OCI archives and OCI layout dirs.

use std::process::ExitCode;

use anyhow::Context as _;
use layerfs::archive::{self, Format};
use layerfs::reference::Reference;

use super::Context;
use crate::cli::{ArchiveFormat, LoadArgs, SaveArgs};

pub fn save(ctx: &Context, args: &SaveArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let mut images = Vec::new();
    for what in &args.images {
        let image = store.resolve_image(what)?;
        // The name to record in the archive: the one asked for, if it is a name of the image.
        let name = Reference::parse(what)
            .ok()
            .filter(|r| image.names.contains(r))
            .or_else(|| image.names.first().cloned());
        images.push((image, name));
    }
    let format = match args.format {
        ArchiveFormat::DockerArchive => Format::DockerArchive,
        ArchiveFormat::OciArchive => Format::OciArchive,
        ArchiveFormat::OciDir => Format::OciDir,
    };
    archive::save(&store, &images, format, &args.output).with_context(|| {
        format!(
            "saving {} to {}",
            args.images.join(", "),
            args.output.display()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(ctx: &Context, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let loaded = archive::load(&store, &args.input)
        .with_context(|| format!("loading {}", args.input.display()))?;
    for image in loaded {
        if image.names.is_empty() {
            ctx.printer.out(format!("Loaded image ID: {}", image.id));
        }
        for name in image.names {
            ctx.printer
                .out(format!("Loaded image: {}", name.familiar()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
