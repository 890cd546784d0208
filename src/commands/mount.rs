//! `mount` and `umount`: an image's layers as a writable union at a directory.

use std::process::ExitCode;

use super::Context;
use crate::cli::{MountArgs, UmountArgs};

pub fn mount(_ctx: &Context, _args: &MountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata mount is not available yet")
}

pub fn umount(_ctx: &Context, _args: &UmountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata umount is not available yet")
}
