//! `save` and `load`: images to and from docker archives, OCI archives and OCI layout dirs;
//! `export`: an image's files as one tar.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use layerfs::archive::{self, Format};
use layerfs::reference::Reference;
use layerfs::store::Store;

use super::{Context, archive_stdout};
use crate::cli::{ArchiveFormat, ExportArgs, LoadArgs, SaveArgs};

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
    let names = args.images.join(", ");
    match args.output.as_deref().filter(|o| *o != Path::new("-")) {
        Some(output) => archive::save(&store, &images, format, output)
            .with_context(|| format!("saving {names} to {}", output.display()))?,
        None => {
            archive::save_stream(
                &store,
                &images,
                format,
                archive_stdout()?,
                Path::new("stdout"),
            )
            .with_context(|| format!("saving {names} to stdout"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `export IMAGE`: the image's files as one tar (its layers applied in order, whiteouts carried
/// out), to a file or to stdout.
pub fn export(ctx: &Context, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let image = store.resolve_image(&args.image)?;
    match args.output.as_deref().filter(|o| *o != Path::new("-")) {
        Some(output) => archive::export_rootfs_tar(&store, &image, output)
            .with_context(|| format!("exporting {} to {}", args.image, output.display()))?,
        None => archive::export_rootfs_tar_stream(
            &store,
            &image,
            archive_stdout()?,
            Path::new("stdout"),
        )
        .with_context(|| format!("exporting {} to stdout", args.image))?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn load(ctx: &Context, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let loaded = match args.input.as_deref().filter(|i| *i != Path::new("-")) {
        Some(input) => {
            archive::load(&store, input).with_context(|| format!("loading {}", input.display()))?
        }
        None => load_stdin(&store).context("loading the archive on stdin")?,
    };
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

/// Loads the archive on stdin, read once from start to end as it comes (a pipe, or a file
/// redirected in).
fn load_stdin(store: &Store) -> anyhow::Result<Vec<archive::Loaded>> {
    let stdin = std::io::stdin();
    anyhow::ensure!(
        !stdin.is_terminal(),
        "no archive: stdin is a terminal (use -i PATH or redirect stdin)"
    );
    Ok(archive::load_stream(store, stdin, Path::new("stdin"))?)
}
