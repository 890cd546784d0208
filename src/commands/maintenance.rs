//! `prune` and `fsck`: keeping the store small and whole.

use std::process::ExitCode;

use layerfs::maintenance;

use super::Context;
use super::images::human_size;
use crate::cli::{FsckArgs, PruneArgs};

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

pub fn fsck(ctx: &Context, args: &FsckArgs) -> anyhow::Result<ExitCode> {
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
    let mut left = problems.len();
    if args.repair {
        let mut layers: Vec<_> = problems.iter().filter_map(|p| p.layer.clone()).collect();
        layers.sort_by(|a, b| a.digest().cmp(b.digest()));
        layers.dedup();
        for chain in &layers {
            store.remove_layer(chain)?;
            ctx.printer.out(format!(
                "repaired: removed extracted layer {chain} (it is extracted again from its blob when needed)"
            ));
        }
        left = problems.iter().filter(|p| p.layer.is_none()).count();
        if left == 0 {
            return Ok(ExitCode::SUCCESS);
        }
    }
    anyhow::bail!("{left} problem(s) found in {}", ctx.root.display())
}
