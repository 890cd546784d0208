//! `pull`, `push`, `copy`, `list-tags`, `login`, `logout`, `inspect docker://`: images to and
//! from registries.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use layerfs::layout::Layout;
use layerfs::reference::Reference;
use layerfs::store::Store;
use oci_spec::image::Digest;
use registry_client::manifest::{self, Manifest};
use registry_client::platform::describe;
use registry_client::{
    ConnectOptions, CopyOptions, Credential, CredentialStore, IndexAnnotations, Platform,
    PullOptions, Pulled, PushOptions, Pushed, Silent,
};
use serde_json::json;

use super::images::{DockerView, print_json, print_template};
use super::{Context, human_size};
use crate::cli::{
    CopyArgs, ImagetoolsCreateArgs, ImagetoolsInspectArgs, InspectArgs, InspectFormat,
    ListTagsArgs, LoginArgs, LogoutArgs, ProgressMode, PullArgs, PushArgs, TagArgs, TagsFormat,
};
use crate::progress::TransferProgress;

/// The prefix that names an image in a registry rather than in the store (skopeo's transport).
pub const DOCKER_TRANSPORT: &str = "docker://";
/// The prefix that names an image in an OCI layout directory (`oci:DIR[:NAME]`, skopeo's).
const OCI_TRANSPORT: &str = "oci:";

fn connect_options(tls_verify: bool) -> ConnectOptions {
    ConnectOptions {
        tls_verify,
        ..ConnectOptions::default()
    }
}

/// `12.3 MB in 1.2s (10.2 MB/s)`.
fn rate(bytes: u64, progress: &TransferProgress) -> String {
    let secs = progress.elapsed().as_secs_f64();
    let per_sec = if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        bytes
    };
    format!(
        "{} in {secs:.1}s ({}/s)",
        human_size(bytes),
        human_size(per_sec)
    )
}

pub fn pull(ctx: &Context, args: PullArgs) -> anyhow::Result<ExitCode> {
    let PullArgs {
        registry,
        platform,
        reference,
    } = args;
    let reference = Reference::parse(&reference)?;
    let platform = platform.as_deref().map(Platform::parse).transpose()?;
    let store = ctx.store()?;
    let opts = PullOptions {
        platform,
        connect: connect_options(registry.tls_verify),
        ..PullOptions::default()
    };
    let pulled = pull_with_progress(ctx, &store, &reference, &opts, registry.progress)?;
    if registry.progress != ProgressMode::Json {
        ctx.printer.out(pulled.reference);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pulls `reference` into `store`, showing the transfer as `mode` says and a summary line (a
/// JSON summary event in JSON mode) at the end. `pull`, and `run` of an image not in the store.
pub(super) fn pull_with_progress(
    ctx: &Context,
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    mode: ProgressMode,
) -> anyhow::Result<Pulled> {
    let progress = TransferProgress::new(mode, ctx.printer);
    let pulled = registry_client::pull(store, reference, opts, &progress)
        .with_context(|| format!("pulling {}", reference.familiar()))?;
    let line = format!(
        "pulled {} ({}, {} layer{}): {}",
        reference.familiar(),
        pulled.platform,
        pulled.layers,
        if pulled.layers == 1 { "" } else { "s" },
        rate(pulled.downloaded, &progress)
    );
    progress.finish(
        &line,
        json!({
            "reference": pulled.reference.to_string(),
            "manifest": pulled.manifest.digest().to_string(),
            "id": pulled.id.to_string(),
            "platform": pulled.platform,
            "layers": pulled.layers,
            "bytes": pulled.downloaded,
        }),
    );
    Ok(pulled)
}

/// `inspect docker://REFERENCE`: the manifest and config from the registry, nothing pulled.
pub fn inspect_remote(
    ctx: &Context,
    args: &InspectArgs,
    reference: &str,
) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(reference)?;
    let opts = PullOptions {
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        connect: connect_options(args.tls_verify),
        ..PullOptions::default()
    };
    let image = registry_client::inspect(&reference, &opts, &Silent)
        .with_context(|| format!("inspecting {}", reference.familiar()))?;
    match &args.format {
        InspectFormat::Id => ctx.printer.out(image.config.digest()),
        InspectFormat::Digest => ctx.printer.out(image.manifest.digest()),
        InspectFormat::Raw => ctx.printer.out_bytes(&image.raw),
        InspectFormat::Config => print_json(ctx, &image.config_bytes, image.config.digest())?,
        InspectFormat::Manifest => print_json(ctx, &image.manifest_bytes, image.manifest.digest())?,
        InspectFormat::Template(template) => {
            let view = DockerView {
                config: &image.config_bytes,
                manifest: &image.manifest_bytes,
                id: image.config.digest(),
                digest: image.manifest.digest(),
                names: std::slice::from_ref(&reference),
            };
            print_template(ctx, template, &view)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn push(ctx: &Context, args: PushArgs) -> anyhow::Result<ExitCode> {
    let PushArgs {
        registry,
        image,
        destination,
        digestfile,
        all_tags,
    } = args;
    let destination = destination.as_deref().map(Reference::parse).transpose()?;
    let store = ctx.store()?;
    let opts = PushOptions {
        connect: connect_options(registry.tls_verify),
        ..PushOptions::default()
    };
    if !all_tags {
        let pushed = push_one(
            ctx,
            &store,
            &image,
            destination.as_ref(),
            &opts,
            registry.progress,
        )?;
        write_digestfile(digestfile.as_deref(), &pushed.digest)?;
        return Ok(ExitCode::SUCCESS);
    }
    // `--all-tags REPOSITORY`: every tag of it in the store, each to its own name.
    anyhow::ensure!(
        destination.is_none() && digestfile.is_none(),
        "--all-tags pushes every tag to its own name: no DEST and no --digestfile"
    );
    let last = image.rsplit('/').next().unwrap_or(&image);
    anyhow::ensure!(
        !last.contains(':') && !last.contains('@'),
        "--all-tags takes a repository, not the tag or digest {image}"
    );
    let repository = Reference::parse(&image)?;
    let mut names: Vec<Reference> = store
        .records()?
        .into_iter()
        .filter_map(|r| r.name)
        .filter(|n| {
            n.registry() == repository.registry() && n.repository() == repository.repository()
        })
        .collect();
    names.sort_by(|a, b| a.tag().cmp(&b.tag()));
    anyhow::ensure!(
        !names.is_empty(),
        "no tag of {} in the store",
        repository.name()
    );
    for name in names {
        push_one(
            ctx,
            &store,
            &name.to_string(),
            None,
            &opts,
            registry.progress,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes the local `image` to `destination` (else its own name), showing the transfer as
/// `mode` says, then its reference and digest on stdout.
fn push_one(
    ctx: &Context,
    store: &Store,
    image: &str,
    destination: Option<&Reference>,
    opts: &PushOptions,
    mode: ProgressMode,
) -> anyhow::Result<Pushed> {
    let progress = TransferProgress::new(mode, ctx.printer);
    let shown = destination.map_or_else(|| image.to_owned(), Reference::familiar);
    let pushed = registry_client::push(store, image, destination, opts, &progress)
        .with_context(|| format!("pushing {image} to {shown}"))?;
    finish_upload(ctx, &progress, "pushed", &pushed, mode);
    Ok(pushed)
}

/// Ends the display of a push or copy with its summary line (`verb`), and prints where the
/// image went as `REFERENCE@DIGEST` on stdout.
fn finish_upload(
    ctx: &Context,
    progress: &TransferProgress,
    verb: &str,
    pushed: &Pushed,
    mode: ProgressMode,
) {
    let line = format!(
        "{verb} {}@{} ({} blobs): {} uploaded",
        pushed.reference.familiar(),
        pushed.digest,
        pushed.blobs,
        rate(pushed.uploaded, progress)
    );
    progress.finish(
        &line,
        json!({
            "reference": pushed.reference.to_string(),
            "digest": pushed.digest.to_string(),
            "blobs": pushed.blobs,
            "bytes": pushed.uploaded,
        }),
    );
    if mode != ProgressMode::Json {
        ctx.printer
            .out(format!("{}@{}", pushed.reference, pushed.digest));
    }
}

fn write_digestfile(path: Option<&Path>, digest: &Digest) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, digest.to_string())
            .with_context(|| format!("--digestfile {}", path.display()))?;
    }
    Ok(())
}

/// One end of a `copy`, by skopeo's transport names.
enum End {
    /// `docker://REF`
    Registry(Reference),
    /// `oci:DIR[:NAME]`
    Layout(PathBuf, Option<String>),
    /// An image of the store (a name or an id).
    Store(String),
}

impl End {
    fn parse(s: &str) -> anyhow::Result<End> {
        if let Some(r) = s.strip_prefix(DOCKER_TRANSPORT) {
            return Ok(End::Registry(Reference::parse(r)?));
        }
        if let Some(rest) = s.strip_prefix(OCI_TRANSPORT) {
            let (dir, name) = match rest.split_once(':') {
                Some((dir, name)) => (dir, Some(name.to_owned())),
                None => (rest, None),
            };
            anyhow::ensure!(
                !dir.is_empty(),
                "{s}: the OCI layout's directory is missing"
            );
            return Ok(End::Layout(PathBuf::from(dir), name));
        }
        Ok(End::Store(s.to_owned()))
    }
}

/// `copy SOURCE DEST`: registry to registry (blobs streamed, or mounted within one registry),
/// registry to and from an OCI layout directory, store to layout, registry to store (a pull
/// under DEST's name), store to registry (a push), or store to store (a tag).
pub fn copy(ctx: &Context, args: CopyArgs) -> anyhow::Result<ExitCode> {
    let CopyArgs {
        registry,
        all,
        platform,
        digestfile,
        source,
        destination,
    } = args;
    let platform = platform.as_deref().map(Platform::parse).transpose()?;
    let connect = connect_options(registry.tls_verify);
    let store = ctx.store()?;
    let one_platform = |what: &str| {
        anyhow::ensure!(
            !all,
            "--all copies an index whole, which the store does not keep: the store keeps one platform of an image ({what})"
        );
        Ok(())
    };
    let opts = CopyOptions {
        all,
        platform: platform.clone(),
        push: PushOptions {
            connect: connect.clone(),
            ..PushOptions::default()
        },
    };
    let copying = || format!("copying {source} to {destination}");
    let progress = || TransferProgress::new(registry.progress, ctx.printer);
    let digest = match (End::parse(&source)?, End::parse(&destination)?) {
        (End::Registry(from), End::Registry(to)) => {
            let spool = store.tmp_path("copy-spool");
            let progress = progress();
            let copied =
                registry_client::copy(&from, to, &spool, &opts, &progress).with_context(copying)?;
            finish_upload(ctx, &progress, "copied to", &copied, registry.progress);
            copied.digest
        }
        (End::Layout(dir, name), End::Registry(to)) => {
            let progress = progress();
            let copied =
                registry_client::copy_from_layout(&dir, name.as_deref(), to, &opts, &progress)
                    .with_context(copying)?;
            finish_upload(ctx, &progress, "copied to", &copied, registry.progress);
            copied.digest
        }
        (End::Registry(from), End::Layout(dir, name)) => {
            let progress = progress();
            let copied =
                registry_client::copy_to_layout(&from, &dir, name.as_deref(), &opts, &progress)
                    .with_context(copying)?;
            let line = format!(
                "copied {} to {destination}@{}",
                from.familiar(),
                copied.digest()
            );
            progress.finish(
                &line,
                json!({"reference": destination, "digest": copied.digest().to_string()}),
            );
            if registry.progress != ProgressMode::Json {
                ctx.printer
                    .out(format!("{destination}@{}", copied.digest()));
            }
            copied.digest().clone()
        }
        (End::Store(image), End::Layout(dir, name)) => {
            one_platform(&source)?;
            let found = store.resolve_image(&image)?;
            let entry = Layout::create(&dir)
                .and_then(|layout| layout.add_image(&store, &found, name.as_deref()))
                .with_context(copying)?;
            if registry.progress != ProgressMode::Json {
                ctx.printer.out(format!("{destination}@{}", entry.digest()));
            }
            entry.digest().clone()
        }
        (End::Layout(..), _) => anyhow::bail!(
            "an OCI layout is copied to a registry (docker://REF); into the store, use strata load -i DIR"
        ),
        (End::Store(image), End::Registry(to)) => {
            one_platform(&source)?;
            anyhow::ensure!(
                platform.is_none(),
                "--platform picks from a registry's image; {source} in the store has one"
            );
            push_one(
                ctx,
                &store,
                &image,
                Some(&to),
                &opts.push,
                registry.progress,
            )?
            .digest
        }
        (End::Registry(from), End::Store(name)) => {
            one_platform(&destination)?;
            let name = Reference::parse(&name)?;
            let opts = PullOptions {
                platform,
                connect,
                tag: false,
                ..PullOptions::default()
            };
            let pulled = pull_with_progress(ctx, &store, &from, &opts, registry.progress)?;
            store.tag(&name, &pulled.manifest)?;
            if registry.progress != ProgressMode::Json {
                ctx.printer.out(&name);
            }
            pulled.manifest.digest().clone()
        }
        (End::Store(image), End::Store(name)) => {
            one_platform(&destination)?;
            let tag = TagArgs {
                source: image.clone(),
                targets: vec![name],
            };
            super::images::tag(ctx, &tag)?;
            store.resolve_image(&image)?.manifest_digest
        }
    };
    write_digestfile(digestfile.as_deref(), &digest)?;
    Ok(ExitCode::SUCCESS)
}

/// `imagetools create -t REF SOURCE…`: one index of the sources' images, pushed to every REF
/// (or printed, with `--dry-run`).
pub fn imagetools_create(ctx: &Context, args: &ImagetoolsCreateArgs) -> anyhow::Result<ExitCode> {
    let registry_ref = |s: &String| Reference::parse(s.strip_prefix(DOCKER_TRANSPORT).unwrap_or(s));
    let sources = args
        .sources
        .iter()
        .map(registry_ref)
        .collect::<Result<Vec<_>, _>>()?;
    let targets = args
        .tags
        .iter()
        .map(registry_ref)
        .collect::<Result<Vec<_>, _>>()?;
    let mut annotations = IndexAnnotations::default();
    for a in &args.annotations {
        annotations.add(a).map_err(anyhow::Error::msg)?;
    }
    let connect = connect_options(args.registry.tls_verify);
    let index = registry_client::make_index(&sources, &annotations, &connect, &Silent)
        .context("making the index")?;
    if args.dry_run {
        ctx.printer.out(String::from_utf8_lossy(&index.bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let store = ctx.store()?;
    let opts = PushOptions {
        connect,
        ..PushOptions::default()
    };
    for target in &targets {
        let progress = TransferProgress::new(args.registry.progress, ctx.printer);
        let spool = store.tmp_path("index-spool");
        let pushed = registry_client::push_index(&index, target, &spool, &opts, &progress)
            .with_context(|| format!("pushing the index to {}", target.familiar()))?;
        finish_upload(
            ctx,
            &progress,
            "pushed index",
            &pushed,
            args.registry.progress,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `imagetools inspect REF`: what REF names in its registry, as buildx prints it.
pub fn imagetools_inspect(ctx: &Context, args: &ImagetoolsInspectArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .reference
        .strip_prefix(DOCKER_TRANSPORT)
        .unwrap_or(&args.reference);
    let reference = Reference::parse(name)?;
    let (media_type, bytes, digest) =
        registry_client::fetch_manifest(&reference, &connect_options(args.tls_verify), &Silent)
            .with_context(|| format!("inspecting {}", reference.familiar()))?;
    if args.raw {
        ctx.printer.out_bytes(&bytes);
        return Ok(ExitCode::SUCCESS);
    }
    let mut text =
        format!("Name:      {reference}\nMediaType: {media_type}\nDigest:    {digest}\n");
    if let Ok((_, Manifest::Index(index))) = manifest::parse(&bytes, Some(&media_type)) {
        text.push_str("\nManifests:");
        for entry in index.manifests() {
            text.push_str(&format!(
                "\n  Name:      {}\n  MediaType: {}\n  Platform:  {}\n",
                reference.with_digest(entry.digest().clone()),
                entry.media_type(),
                describe(entry).unwrap_or_else(|| "(none)".to_owned()),
            ));
        }
    }
    ctx.printer.out(text.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `list-tags REPOSITORY`: the tags a registry has for it.
pub fn list_tags(ctx: &Context, args: &ListTagsArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .repository
        .strip_prefix(DOCKER_TRANSPORT)
        .unwrap_or(&args.repository);
    let repository = Reference::parse(name)?;
    anyhow::ensure!(
        repository.digest().is_none() && !name.rsplit('/').next().unwrap_or(name).contains(':'),
        "list-tags takes a repository, not the tag or digest {name}"
    );
    let tags = registry_client::tags(&repository, &connect_options(args.tls_verify), &Silent)
        .with_context(|| format!("listing the tags of {}", repository.name()))?;
    match args.format {
        TagsFormat::Lines => {
            for tag in tags {
                ctx.printer.out(tag);
            }
        }
        TagsFormat::Json => ctx.printer.out(serde_json::to_string_pretty(&json!({
            "Repository": repository.name(),
            "Tags": tags,
        }))?),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_client::parse_registry(&args.registry)?;
    let username = match args.username {
        Some(u) => u,
        None if ctx.printer.stdin_is_tty() && !args.password_stdin => {
            ctx.printer.prompt("Username: ");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the username")?;
            line.trim().to_owned()
        }
        None => anyhow::bail!("give the username with -u USER"),
    };
    anyhow::ensure!(!username.is_empty(), "the username is empty");
    let password = if args.password_stdin {
        anyhow::ensure!(
            args.password.is_none(),
            "--password and --password-stdin are mutually exclusive"
        );
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = args.password {
        ctx.printer.note(
            "warning: --password is visible to other users of this machine; use --password-stdin",
        );
        p
    } else if ctx.printer.stdin_is_tty() {
        ctx.printer.prompt("Password: ");
        read_password_without_echo()?
    } else {
        anyhow::bail!("give the password on stdin with --password-stdin");
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    let credential = Credential::new(username, password);
    let connect = ConnectOptions {
        tls_verify: args.tls_verify,
        ..ConnectOptions::default()
    };
    registry_client::login(&registry, credential.clone(), &connect)
        .with_context(|| format!("logging in to {registry}"))?;
    let stored_in = CredentialStore::from_env()
        .save(&registry, &credential)
        .with_context(|| format!("storing the credentials for {registry}"))?;
    ctx.printer
        .note(format!("credentials for {registry} stored in {stored_in}"));
    ctx.printer.out("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(ctx: &Context, args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_client::parse_registry(&args.registry)?;
    let removed = CredentialStore::from_env()
        .remove(&registry)
        .with_context(|| format!("removing the credentials for {registry}"))?;
    if removed {
        ctx.printer
            .out(format!("Removed login credentials for {registry}"));
    } else {
        ctx.printer.out(format!("Not logged in to {registry}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a line from the terminal on stdin with echo off (restored whatever happens).
fn read_password_without_echo() -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning the terminal's echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln_newline();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The newline the user typed was not echoed.
fn eprintln_newline() {
    crate::printer::Printer.note("");
}
