//! `build`: a Dockerfile to an image.

use std::process::ExitCode;

use super::Context;
use crate::cli::BuildArgs;

pub fn build(_ctx: &Context, _args: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata build is not available yet")
}
