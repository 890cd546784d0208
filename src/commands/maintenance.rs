//! `prune` and `fsck`: keeping the store small and whole.

use std::process::ExitCode;

use layerfs::maintenance;

use super::Context;
use super::images::human_size;
use crate::cli::PruneArgs;

pub fn prune(ctx: &Context, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let p = maintenance::prune(&store, args.all)?;
    ctx.printer.out(format!(
        "Removed {} untagged image(s), {} blob(s) ({}), {} extracted layer(s)",
        p.images,
        p.blobs,
        human_size(p.bytes),
        p.layers
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let problems = maintenance::fsck(&store)?;
    if problems.is_empty() {
        ctx.printer
            .out("ok: every blob matches its digest and every layer its blob");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        ctx.printer.out(format!("{}: {}", p.subject, p.what));
    }
    anyhow::bail!(
        "{} problem(s) found in {}",
        problems.len(),
        ctx.root.display()
    )
}
