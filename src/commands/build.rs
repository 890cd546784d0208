//! `build`: a Dockerfile to an image, with a progress view (live on a terminal, plain lines
//! otherwise, JSON events for machines).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use builder::build::fetch::{Downloads, is_url};
use builder::build::{
    BuildOptions, CacheSource, DockerfileSource, Event, Network, Reporter, Secret, Squash,
    SshAgent, build,
};
use builder::plan::ImageContext;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use layerfs::archive;
use layerfs::cache_export;
use layerfs::layer::compress::Compression;
use layerfs::reference::Reference;
use layerfs::store::{Image, Store};
use oci_spec::image::Digest;
use registry_client::{ConnectOptions, PullOptions, PushOptions};

use super::{Context, archive_stdout};
use crate::cli::{BuildArgs, NetworkMode, ProgressMode};
use crate::progress::TransferProgress;

pub fn build_command(ctx: &Context, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("-t {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(p) = &args.platform {
        let host = format!("linux/{}", layerfs::config::host_architecture());
        anyhow::ensure!(
            p == &host,
            "--platform {p}: strata builds for this host's platform only ({host})"
        );
    }
    let compression = Compression::parse(&args.compression).with_context(|| {
        format!(
            "--compression {}: use gzip[:LEVEL], zstd[:LEVEL] or none",
            args.compression
        )
    })?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            // `--build-arg KEY` takes the value from the environment, when set.
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut named_contexts = BTreeMap::new();
    let mut image_contexts = Vec::new();
    let mut url_contexts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for spec in &args.build_contexts {
        let (name, source) = spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
            .with_context(|| {
                format!("--build-context {spec}: expected NAME=DIR or NAME=docker-image://REF")
            })?;
        anyhow::ensure!(
            seen.insert(name),
            "--build-context {spec}: another --build-context has the name {name}"
        );
        if let Some(image) = source.strip_prefix("docker-image://") {
            image_contexts.push(ImageContext {
                name: Reference::parse(name)
                    .with_context(|| format!("--build-context {spec}: the name"))?,
                image: image.to_owned(),
                reference: Reference::parse(image)
                    .with_context(|| format!("--build-context {spec}: the image"))?,
            });
            continue;
        }
        if is_url(source) {
            url_contexts.push((name.to_owned(), source.to_owned()));
            continue;
        }
        anyhow::ensure!(
            !source.contains("://"),
            "--build-context {spec}: only local directories, http(s) URLs of tars and docker-image:// are supported"
        );
        let dir =
            std::fs::canonicalize(source).with_context(|| format!("--build-context {spec}"))?;
        anyhow::ensure!(dir.is_dir(), "--build-context {spec}: not a directory");
        named_contexts.insert(name.to_owned(), dir);
    }
    // `--label KEY` is an empty label, as docker has it.
    let labels = args
        .labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            anyhow::ensure!(!k.is_empty(), "--label {l:?}: a label needs a key");
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let secrets = args
        .secrets
        .iter()
        .map(|spec| Secret::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
    let ssh = args
        .ssh
        .iter()
        .map(|spec| SshAgent::parse(spec, auth_sock.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !args.push || !tags.is_empty(),
        "--push needs the name to push: -t REGISTRY/NAME:TAG"
    );
    let outputs = args
        .outputs
        .iter()
        .map(|o| Output::parse(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let id_to_stdout = !outputs.iter().any(Output::to_stdout);
    anyhow::ensure!(
        outputs.iter().filter(|o| o.to_stdout()).count() <= 1,
        "only one --output can have dest=-"
    );
    anyhow::ensure!(
        id_to_stdout || args.progress != ProgressMode::Json,
        "--progress json writes its events to stdout, where --output dest=- writes the archive"
    );
    // `-` as the context: a tar of it (or, not a tar, a Dockerfile alone) on stdin; an
    // http(s) URL: the same, downloaded.
    let store = ctx.store()?;
    let cancel = crate::signals::interrupt_flag();
    let context_arg = args.context.to_string_lossy();
    let stdin_context = if context_arg == "-" {
        anyhow::ensure!(
            args.file.as_deref() != Some(Path::new("-")),
            "-f - and a context from stdin (-) cannot both read stdin"
        );
        Some(StreamContext::read(&store, std::io::stdin(), "stdin")?)
    } else if is_url(&context_arg) {
        Some(StreamContext::download(&store, &context_arg, cancel)?)
    } else {
        None
    };
    // Named contexts from URLs: tars, downloaded and unpacked as a URL build context is (and
    // kept until the build ends).
    let mut downloaded_contexts = Vec::new();
    for (name, url) in url_contexts {
        let context = StreamContext::download(&store, &url, cancel)?;
        anyhow::ensure!(
            context.dockerfile.is_none(),
            "--build-context {name}={url}: not a tar"
        );
        named_contexts.insert(name, context.dir.clone());
        downloaded_contexts.push(context);
    }
    let context = match &stdin_context {
        Some(c) => c.dir.clone(),
        None => std::fs::canonicalize(&args.context)
            .with_context(|| format!("build context {}", args.context.display()))?,
    };
    anyhow::ensure!(
        context.is_dir(),
        "build context {} is not a directory",
        args.context.display()
    );
    let stdin_dockerfile = stdin_context.as_ref().and_then(|c| c.dockerfile.clone());
    let dockerfile = match (stdin_dockerfile, &args.file) {
        (Some(text), _) => DockerfileSource::Text(text),
        // In a context from stdin or a URL, -f names a file inside it.
        (None, Some(f)) if stdin_context.is_some() => DockerfileSource::File(context.join(f)),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the Dockerfile from stdin (-f -)")?;
            DockerfileSource::Text(text)
        }
        (None, Some(f)) => DockerfileSource::File(f.clone()),
        (None, None) => DockerfileSource::File(context.join("Dockerfile")),
    };
    let mode = match args.progress {
        _ if args.quiet => ProgressMode::Quiet,
        ProgressMode::Auto if ctx.printer.stderr_is_tty() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    // Base images not in the store are pulled, and --push pushes, with their transfers shown
    // as lines (or JSON events) beside the build's own view.
    let transfer_mode = match mode {
        ProgressMode::Json | ProgressMode::Quiet => mode,
        _ => ProgressMode::Plain,
    };
    let transfer = TransferProgress::new(transfer_mode, ctx.printer);
    let connect = ConnectOptions {
        tls_verify: args.tls_verify,
        ..ConnectOptions::default()
    };
    let pull_opts = PullOptions {
        connect: connect.clone(),
        ..PullOptions::default()
    };
    let puller = |r: &Reference| {
        registry_client::pull(&store, r, &pull_opts, &transfer)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    // --cache-from: each cache's entries, brought in (a registry's pulled untagged) only when a
    // step's key is missing here.
    let cache_to = args
        .cache_to
        .as_deref()
        .map(|spec| CacheLocation::parse("--cache-to", spec))
        .transpose()?;
    let mut remote_cache: HashMap<String, (CacheLocation, Digest)> = HashMap::new();
    for spec in &args.cache_from {
        let source = CacheLocation::parse("--cache-from", spec)?;
        match source.entries(&connect) {
            Ok(entries) => remote_cache.extend(
                entries
                    .into_iter()
                    .map(|(key, digest)| (key, (source.clone(), digest))),
            ),
            Err(e) => ctx.printer.note(format!(
                "warning: --cache-from {spec}: {e:#}; building without it"
            )),
        }
    }
    let cache_pull_opts = PullOptions {
        tag: false,
        ..pull_opts.clone()
    };
    let cache_source = |key: &str| -> Option<Digest> {
        let (source, digest) = remote_cache.get(key)?;
        let brought: anyhow::Result<()> = match source {
            CacheLocation::Registry(reference) => registry_client::pull(
                &store,
                &reference.with_digest(digest.clone()),
                &cache_pull_opts,
                &transfer,
            )
            .map(drop)
            .map_err(Into::into),
            CacheLocation::Local(dir) => {
                cache_export::import_from_dir(&store, dir, digest).map_err(Into::into)
            }
        };
        match brought {
            Ok(()) => Some(digest.clone()),
            Err(e) => {
                ctx.printer.note(format!(
                    "warning: --cache-from {source}: state {digest}: {e:#}; running the step"
                ));
                None
            }
        }
    };
    let opts = BuildOptions {
        context,
        named_contexts,
        image_contexts,
        dockerfile,
        build_args,
        labels,
        target: args.target.clone(),
        no_cache: args.no_cache,
        extra_hosts: args
            .add_hosts
            .iter()
            .map(|h| super::run::parse_add_host(h))
            .collect::<anyhow::Result<_>>()?,
        ulimits: args
            .ulimit
            .iter()
            .map(|u| runner::Ulimit::parse(u))
            .collect::<Result<_, _>>()?,
        shm_size: args
            .shm_size
            .as_deref()
            .map(super::run::parse_bytes)
            .transpose()?,
        squash: if args.squash_all {
            Some(Squash::All)
        } else {
            args.squash.then_some(Squash::NewLayers)
        },
        network: match args.network {
            NetworkMode::Host => Network::Host,
            NetworkMode::None => Network::None,
        },
        compression,
        pull: Some(&puller),
        cache_source: (!remote_cache.is_empty()).then_some(&cache_source as CacheSource<'_>),
        pull_always: args.pull,
        cancel,
        storage_driver: super::mount::storage_driver(ctx),
        secrets,
        ssh,
    };
    let mut view = View::new(mode);
    let built = build(&store, &opts, &mut view);
    view.finish();
    let built = built?;
    let quiet = mode == ProgressMode::Quiet;
    let note = |line: String| {
        if !quiet {
            ctx.printer.note(line);
        }
    };
    // The cache and outputs before tags: a build whose export fails tags nothing.
    let push_opts = PushOptions {
        connect,
        ..PushOptions::default()
    };
    match &cache_to {
        Some(CacheLocation::Registry(dest)) => {
            let top = cache_export::cache_index(&store, &built.cache_entries)?;
            registry_client::push_manifest(&store, &top, dest.clone(), &push_opts, &transfer)
                .with_context(|| format!("--cache-to {}: pushing the cache", dest.familiar()))?;
        }
        Some(CacheLocation::Local(dir)) => {
            cache_export::export_dir(&store, &built.cache_entries, dir)
                .with_context(|| format!("--cache-to {}", dir.display()))?;
        }
        None => {}
    }
    if let Some(dest) = &cache_to {
        note(format!(
            "cache exported to {dest} ({} steps)",
            built.cache_entries.len()
        ));
    }
    if !outputs.is_empty() {
        let image = store.image_for_manifest(&built.manifest)?;
        for output in &outputs {
            output.write(&store, &image, tags.first())?;
            note(format!("exported to {}", output.shown()));
        }
    }
    for t in &tags {
        store.tag(t, &built.manifest)?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, built.id.to_string())
            .with_context(|| format!("--iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let names: Vec<String> = tags.iter().map(ToString::to_string).collect();
        let metadata = serde_json::json!({
            "containerimage.digest": built.manifest.digest().to_string(),
            "containerimage.config.digest": built.id.to_string(),
            "containerimage.descriptor": built.manifest,
            "image.name": names.join(","),
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&metadata).expect("JSON values serialize"),
        )
        .with_context(|| format!("--metadata-file {}", path.display()))?;
    }
    if args.push {
        for t in &tags {
            let pushed =
                registry_client::push(&store, &t.to_string(), Some(t), &push_opts, &transfer)
                    .with_context(|| format!("pushing {}", t.familiar()))?;
            note(format!(
                "pushed {}@{}",
                pushed.reference.familiar(),
                pushed.digest
            ));
        }
    }
    // stdout may carry an --output archive: the id goes to stderr then.
    if id_to_stdout {
        ctx.printer.out(&built.id);
    } else {
        note(built.id.to_string());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `--cache-from`/`--cache-to` point, in buildx's syntax: `type=registry,ref=REF` (or a
/// bare `REF`), or `type=local,src=DIR` / `type=local,dest=DIR` (an OCI layout directory).
#[derive(Clone)]
enum CacheLocation {
    Registry(Reference),
    Local(PathBuf),
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{}", r.familiar()),
            CacheLocation::Local(dir) => write!(f, "{}", dir.display()),
        }
    }
}

impl CacheLocation {
    fn parse(flag: &str, spec: &str) -> anyhow::Result<CacheLocation> {
        let (mut kind, mut reference, mut dir) = ("registry", None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", t @ ("registry" | "local"))) => kind = t,
                Some(("type", other)) => {
                    bail!("{flag} {spec}: type {other} is not one of registry, local")
                }
                Some(("ref", r)) => reference = Some(r),
                Some(("src" | "dest", d)) => dir = Some(d),
                Some(("mode" | "compression" | "ignore-error", _)) => {}
                Some((k, _)) => bail!("{flag} {spec}: unknown field {k}"),
                None => reference = Some(field),
            }
        }
        if kind == "local" {
            let dir = dir.with_context(|| format!("{flag} {spec}: no src=DIR or dest=DIR"))?;
            return Ok(CacheLocation::Local(PathBuf::from(dir)));
        }
        let reference = reference.with_context(|| format!("{flag} {spec}: no ref=REF"))?;
        Ok(CacheLocation::Registry(
            Reference::parse(reference).with_context(|| format!("{flag} {spec}"))?,
        ))
    }

    /// The cache's entries: each step key and its state's manifest digest.
    fn entries(&self, connect: &ConnectOptions) -> anyhow::Result<HashMap<String, Digest>> {
        match self {
            CacheLocation::Registry(source) => {
                let (_, bytes, _) =
                    registry_client::fetch_manifest(source, connect, &registry_client::Silent)?;
                cache_export::index_entries(&bytes).map_err(anyhow::Error::msg)
            }
            CacheLocation::Local(dir) => Ok(cache_export::read_dir_entries(dir)?),
        }
    }
}

/// A build context read from a stream, as docker reads one from stdin (`strata build -`) or
/// a URL: a tar (plain, gzip, zstd or xz) unpacked into the store's tmp with the same
/// hostile-archive-safe apply as every layer, or, when it is not a tar, a Dockerfile alone with
/// an empty context. The directory goes when this is dropped.
struct StreamContext {
    dir: PathBuf,
    /// The Dockerfile, when the stream was one.
    dockerfile: Option<String>,
}

impl StreamContext {
    /// Downloads the context at `url` (stopping when `cancel` is set) and reads it.
    fn download(store: &Store, url: &str, cancel: &AtomicBool) -> anyhow::Result<StreamContext> {
        let downloads = Downloads::fetch(
            store.tmp_path("context-download"),
            &[url.to_owned()],
            None,
            cancel,
        )?;
        let path = &downloads.files[0].path;
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        StreamContext::read(store, file, url)
    }

    /// Reads the context `input`; `what` names it in errors (`stdin`, the URL).
    fn read(
        store: &Store,
        input: impl std::io::Read + Send + 'static,
        what: &str,
    ) -> anyhow::Result<StreamContext> {
        use std::io::Read as _;
        let dir = store.tmp_path("build-context");
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut context = StreamContext {
            dir,
            dockerfile: None,
        };
        let reading = || format!("reading the build context from {what}");
        let mut input = layerfs::layer::compress::decompress(input).with_context(reading)?;
        // A tar has `ustar` at offset 257 of its first header.
        let mut head = Vec::with_capacity(512);
        (&mut input)
            .take(512)
            .read_to_end(&mut head)
            .with_context(reading)?;
        if head.get(257..262) == Some(b"ustar".as_slice()) {
            let opts = layerfs::layer::apply::ApplyOptions {
                target: layerfs::layer::apply::Target::Rootfs,
                xattrs: layerfs::layer::OverlayXattrs::for_this_process(),
                mknod: false,
                chown: false,
                whiteouts: false,
            };
            layerfs::layer::apply::apply(head.chain(input), &context.dir, &opts)
                .with_context(|| format!("unpacking the build context from {what}"))?;
        } else {
            let neither = || format!("{what} is neither a tar nor a Dockerfile");
            let mut text = String::from_utf8(head).map_err(|_| anyhow::anyhow!(neither()))?;
            input.read_to_string(&mut text).with_context(neither)?;
            context.dockerfile = Some(text);
        }
        Ok(context)
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        let _ = layerfs::store::remove_tree(&self.dir);
    }
}

/// What `--output` writes.
enum OutputKind {
    /// The image's files, as a directory.
    Local,
    /// The image's files, as one tar.
    Tar,
    /// The image, as an archive `load` (and `docker load`) reads.
    Archive(archive::Format),
}

/// Where `--output` writes the result.
struct Output {
    kind: OutputKind,
    /// `-`: stdout.
    dest: PathBuf,
}

impl Output {
    /// `type=local|tar|docker|oci,dest=PATH|-` (buildx's syntax), or a bare directory.
    fn parse(spec: &str) -> anyhow::Result<Output> {
        if !spec.contains('=') {
            return Ok(Output {
                kind: OutputKind::Local,
                dest: PathBuf::from(spec),
            });
        }
        let (mut kind, mut dest) = (None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                _ => bail!("--output {spec}: unknown field {field:?} (type=…,dest=…)"),
            }
        }
        let kind = match kind.unwrap_or("local") {
            "local" => OutputKind::Local,
            "tar" => OutputKind::Tar,
            "docker" => OutputKind::Archive(archive::Format::DockerArchive),
            "oci" => OutputKind::Archive(archive::Format::OciArchive),
            other => bail!("--output {spec}: type {other} is not one of local, tar, docker, oci"),
        };
        let dest = dest.with_context(|| format!("--output {spec}: no dest=PATH"))?;
        let output = Output { kind, dest };
        anyhow::ensure!(
            !(output.to_stdout() && matches!(output.kind, OutputKind::Local)),
            "--output {spec}: type=local writes a directory; dest=- needs type=tar, docker or oci"
        );
        Ok(output)
    }

    fn to_stdout(&self) -> bool {
        self.dest == Path::new("-")
    }

    /// What the notes call the destination.
    fn shown(&self) -> String {
        if self.to_stdout() {
            "stdout".to_owned()
        } else {
            self.dest.display().to_string()
        }
    }

    fn write(&self, store: &Store, image: &Image, name: Option<&Reference>) -> anyhow::Result<()> {
        let images = [(image.clone(), name.cloned())];
        let stdout = Path::new("stdout");
        match (&self.kind, self.to_stdout()) {
            (OutputKind::Local, _) => archive::export_rootfs(store, image, &self.dest),
            (OutputKind::Tar, false) => archive::export_rootfs_tar(store, image, &self.dest),
            (OutputKind::Tar, true) => {
                archive::export_rootfs_tar_stream(store, image, archive_stdout()?, stdout)
            }
            (OutputKind::Archive(format), false) => {
                archive::save(store, &images, *format, &self.dest)
            }
            (OutputKind::Archive(format), true) => {
                archive::save_stream(store, &images, *format, archive_stdout()?, stdout)
            }
        }
        .with_context(|| format!("--output {}", self.shown()))
    }
}

/// How the progress is shown.
enum View {
    Plain,
    Json,
    Tty(Live),
    /// The current step's output, shown only if the step fails.
    Quiet(Vec<String>),
}

/// How many of a step's last output lines the quiet view keeps for an error.
const QUIET_LINES: usize = 50;

struct Live {
    multi: MultiProgress,
    step: Option<(ProgressBar, Vec<ProgressBar>, String)>,
}

/// Output lines shown under the running step in the live view.
const LIVE_LINES: usize = 5;

impl View {
    fn new(mode: ProgressMode) -> Self {
        match mode {
            ProgressMode::Json => View::Json,
            ProgressMode::Quiet => View::Quiet(Vec::new()),
            ProgressMode::Tty => View::Tty(Live {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                step: None,
            }),
            _ => View::Plain,
        }
    }

    fn finish(&mut self) {
        if let View::Tty(live) = self
            && let Some((bar, lines, _)) = live.step.take()
        {
            bar.finish_and_clear();
            lines.iter().for_each(ProgressBar::finish_and_clear);
        }
    }
}

#[allow(clippy::print_stderr)]
fn err_line(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{s}");
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Reporter for View {
    fn event(&mut self, event: Event) {
        match self {
            View::Plain => match event {
                Event::Start(s) => err_line(&format!(
                    "#{} [{} {}/{}] {}",
                    s.id, s.stage, s.index, s.total, s.text
                )),
                Event::Cached { id } => err_line(&format!("#{id} CACHED")),
                Event::Output { id, line } => err_line(&format!("#{id} {line}")),
                Event::Done { id, elapsed } => err_line(&format!("#{id} DONE {}", secs(elapsed))),
                Event::Failed { id, error } => err_line(&format!("#{id} ERROR: {error}")),
                Event::Note(n) => err_line(&n),
            },
            View::Json => {
                let v = match event {
                    Event::Start(s) => {
                        serde_json::json!({"event": "start", "step": s.id, "stage": s.stage, "index": s.index, "total": s.total, "instruction": s.text})
                    }
                    Event::Cached { id } => serde_json::json!({"event": "cached", "step": id}),
                    Event::Output { id, line } => {
                        serde_json::json!({"event": "output", "step": id, "line": line})
                    }
                    Event::Done { id, elapsed } => {
                        serde_json::json!({"event": "done", "step": id, "seconds": elapsed.as_secs_f64()})
                    }
                    Event::Failed { id, error } => {
                        serde_json::json!({"event": "error", "step": id, "error": error})
                    }
                    Event::Note(n) => serde_json::json!({"event": "note", "message": n}),
                };
                err_line(&v.to_string());
            }
            View::Tty(live) => live.event(event),
            View::Quiet(lines) => match event {
                Event::Start(_) => lines.clear(),
                Event::Output { line, .. } => {
                    if lines.len() == QUIET_LINES {
                        lines.remove(0);
                    }
                    lines.push(line);
                }
                Event::Failed { error, .. } => {
                    lines.iter().for_each(|l| err_line(l));
                    err_line(&format!("ERROR: {error}"));
                }
                Event::Cached { .. } | Event::Done { .. } | Event::Note(_) => {}
            },
        }
    }
}

impl Live {
    fn event(&mut self, event: Event) {
        match event {
            Event::Start(s) => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .expect("a valid template"),
                );
                let title = format!("[{} {}/{}] {}", s.stage, s.index, s.total, s.text);
                bar.set_message(title.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                let lines = (0..LIVE_LINES)
                    .map(|_| {
                        let l = self.multi.add(ProgressBar::new_spinner());
                        l.set_style(
                            ProgressStyle::with_template("    {msg:.dim}")
                                .expect("a valid template"),
                        );
                        l
                    })
                    .collect();
                self.step = Some((bar, lines, title));
            }
            Event::Output { line, .. } => {
                if let Some((_, lines, _)) = &self.step {
                    for i in 0..LIVE_LINES - 1 {
                        lines[i].set_message(lines[i + 1].message());
                    }
                    lines[LIVE_LINES - 1].set_message(line);
                }
            }
            Event::Cached { .. } => {
                if let Some((bar, _, title)) = &self.step {
                    bar.set_message(format!("{title} CACHED"));
                }
            }
            Event::Done { elapsed, .. } => {
                if let Some((bar, lines, title)) = self.step.take() {
                    let cached = bar.message().ends_with(" CACHED");
                    bar.finish_and_clear();
                    lines.iter().for_each(ProgressBar::finish_and_clear);
                    let status = if cached {
                        "CACHED".to_owned()
                    } else {
                        secs(elapsed)
                    };
                    let _ = self.multi.println(format!("✔ {title} {status}"));
                }
            }
            Event::Failed { error, .. } => {
                if let Some((bar, lines, title)) = self.step.take() {
                    let tail: Vec<String> = lines
                        .iter()
                        .map(ProgressBar::message)
                        .filter(|m| !m.is_empty())
                        .collect();
                    bar.finish_and_clear();
                    lines.iter().for_each(ProgressBar::finish_and_clear);
                    let _ = self.multi.println(format!("✘ {title}"));
                    for l in tail {
                        let _ = self.multi.println(format!("    {l}"));
                    }
                    let _ = self.multi.println(format!("  {error}"));
                }
            }
            Event::Note(n) => {
                let _ = self.multi.println(n);
            }
        }
    }
}
