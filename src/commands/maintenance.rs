//! `prune` and `fsck`: keeping the store small and whole.

use std::process::ExitCode;

use super::Context;
use crate::cli::PruneArgs;

pub fn prune(_ctx: &Context, _args: &PruneArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata prune is not available yet")
}

pub fn fsck(_ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata fsck is not available yet")
}
