//! `pull`, `push`, `login`, `logout`: images to and from registries.

use std::process::ExitCode;

use super::Context;
use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PushArgs};

pub fn pull(_ctx: &Context, _args: PullArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata pull is not available yet")
}

pub fn push(_ctx: &Context, _args: PushArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata push is not available yet")
}

pub fn login(_ctx: &Context, _args: LoginArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata login is not available yet")
}

pub fn logout(_ctx: &Context, _args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata logout is not available yet")
}
