//! `run`: a command in a new container of an image.

use std::process::ExitCode;

use super::Context;
use crate::cli::RunArgs;

pub fn run(_ctx: &Context, _args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata run is not available yet")
}
