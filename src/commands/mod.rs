//! One module per command (or family of commands); [`dispatch`] picks it.

mod archive;
mod build;
mod images;
mod import;
mod info;
mod maintenance;
mod mount;
mod registry;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use layerfs::store::Store;

use crate::cli::{Command, GlobalArgs, ImagetoolsCommand, StorageDriver};
use crate::printer::Printer;

pub use images::human_size;

/// stdout, to write an archive to (`save`, `build -o …,dest=-`); never a terminal.
fn archive_stdout() -> anyhow::Result<std::fs::File> {
    use std::io::IsTerminal as _;
    use std::os::fd::AsFd as _;
    let stdout = std::io::stdout();
    anyhow::ensure!(
        !stdout.is_terminal(),
        "refusing to write an archive to a terminal: redirect stdout, or name a file"
    );
    let fd = stdout
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    Ok(fd.into())
}

/// What every command gets: where the store is, how to mount, how to print.
#[derive(Debug)]
pub struct Context {
    pub root: PathBuf,
    pub storage_driver: Option<StorageDriver>,
    pub printer: Printer,
}

impl Context {
    pub fn new(global: &GlobalArgs, printer: Printer) -> anyhow::Result<Self> {
        let root = match &global.root {
            Some(r) => r.clone(),
            None => default_root()?,
        };
        Ok(Context {
            root,
            storage_driver: global.storage_driver,
            printer,
        })
    }

    /// Opens (creating if needed) the store.
    pub fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("opening the store at {}", self.root.display()))
    }
}

/// `/var/lib/strata` as root, `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`) otherwise.
fn default_root() -> anyhow::Result<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/strata"));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("strata"));
    }
    let home = std::env::var_os("HOME")
        .context("neither --root, STRATA_ROOT, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/strata"))
}

/// Runs `command`.
pub fn dispatch(command: Command, ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Build(a) => build::build_command(ctx, &a),
        Command::Run(a) => run::run(ctx, *a),
        Command::Images(a) => images::images(ctx, &a),
        Command::Inspect(a) => images::inspect(ctx, &a),
        Command::History(a) => images::history(ctx, &a),
        Command::Tag(a) => images::tag(ctx, &a),
        Command::Rmi(a) => images::rmi(ctx, &a),
        Command::Import(a) => import::import(ctx, &a),
        Command::Export(a) => archive::export(ctx, &a),
        Command::Save(a) => archive::save(ctx, &a),
        Command::Load(a) => archive::load(ctx, &a),
        Command::Pull(a) => registry::pull(ctx, a),
        Command::Push(a) => registry::push(ctx, a),
        Command::Copy(a) => registry::copy(ctx, a),
        Command::ListTags(a) => registry::list_tags(ctx, &a),
        Command::Imagetools(ImagetoolsCommand::Create(a)) => registry::imagetools_create(ctx, &a),
        Command::Imagetools(ImagetoolsCommand::Inspect(a)) => registry::imagetools_inspect(ctx, &a),
        Command::Login(a) => registry::login(ctx, a),
        Command::Logout(a) => registry::logout(ctx, &a),
        Command::Mount(a) => mount::mount(ctx, &a),
        Command::Umount(a) => mount::umount(ctx, &a),
        Command::Prune(a) => maintenance::prune(ctx, &a),
        Command::Fsck(a) => maintenance::fsck(ctx, &a),
        Command::Info(a) => info::info(ctx, &a),
    }
}
