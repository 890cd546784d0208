//! `save` and `load`: images to and from docker archives, OCI archives and OCI layout dirs.

use std::process::ExitCode;

use super::Context;
use crate::cli::{LoadArgs, SaveArgs};

pub fn save(_ctx: &Context, _args: &SaveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata save is not available yet")
}

pub fn load(_ctx: &Context, _args: &LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata load is not available yet")
}
