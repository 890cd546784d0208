//! `import ROOTFS.tar NAME`: a root filesystem tarball becomes a one-layer image.

use std::fs::File;
use std::process::ExitCode;

use anyhow::Context as _;
use layerfs::config::{History, ImageConfig, creation_time, rfc3339};
use layerfs::layer::apply::{ApplyOptions, Target, apply};
use layerfs::layer::commit::{CommitOptions, commit_dir};
use layerfs::layer::compress::decompress;
use layerfs::reference::Reference;

use super::Context;
use crate::cli::ImportArgs;

pub fn import(ctx: &Context, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let name = Reference::parse(&args.name)?;
    let store = ctx.store()?;
    let _content = store.lock_content()?;
    let file =
        File::open(&args.tarball).with_context(|| format!("opening {}", args.tarball.display()))?;
    let staged = store.tmp_path("import");
    std::fs::create_dir_all(&staged)?;
    let result = (|| -> anyhow::Result<_> {
        let input =
            decompress(file).with_context(|| format!("reading {}", args.tarball.display()))?;
        apply(
            input,
            &staged,
            &ApplyOptions::for_this_process(Target::LayerDir),
        )
        .with_context(|| format!("extracting {}", args.tarball.display()))?;
        // The layer blob is written from the extracted tree, so the same tree always gives
        // the same layer whatever tool made the tarball.
        Ok(commit_dir(&store, &staged, None, CommitOptions::default())?)
    })();
    let layer = match result {
        Ok(l) => l,
        Err(e) => {
            let _ = layerfs::store::remove_tree(&staged);
            return Err(e);
        }
    };
    let created = rfc3339(creation_time());
    let mut config = ImageConfig::new_for_host();
    config.created = Some(created.clone());
    config.config.env = Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ]);
    config.rootfs.diff_ids = vec![layer.blob.diff_id.clone()];
    config.history = vec![History {
        created: Some(created),
        created_by: Some(format!(
            "strata import {}",
            args.tarball
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        )),
        comment: Some("imported from a root filesystem tarball".to_owned()),
        ..Default::default()
    }];
    let manifest = store.put_image(&config, &[layer.blob.descriptor])?;
    store.tag(&name, &manifest)?;
    let image = store.resolve_image(&name.to_string())?;
    ctx.printer.out(image.id());
    Ok(ExitCode::SUCCESS)
}
