//! Runs the stages of a Dockerfile that a target needs, step by step, with the build cache.
//!
//! Each step has a key (its parent state's key and everything it depends on); a key found in
//! the cache gives the step's resulting state without running anything (`CACHED`). Otherwise:
//! metadata instructions change the config and add a history entry; RUN runs in the sandbox
//! over the parent's layers with a fresh upper dir that becomes the new layer; COPY, ADD and
//! WORKDIR write through a union mount private to one thread (nothing shows in the host's
//! mount table, nothing is left if strata dies) and their upper dir becomes the layer. A step
//! that changes nothing adds no layer (its history entry says `empty_layer`).
//!
//! This module walks the stages and keeps the cache; RUN steps are in `run_step`, COPY and
//! ADD in `copy_step`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use layerfs::config::{Empty, History, creation_time, rfc3339};
use layerfs::layer::commit::{CommitOptions, commit_dir};
use layerfs::layer::compress::Compression;
use layerfs::layer::diff::Visit;
use layerfs::mount::{StorageDriver, UnionSpec, enter_private_mount_namespace, mount_union};
use layerfs::reference::Reference;
use layerfs::store::{Store, remove_tree};
use oci_spec::image::{Descriptor, Digest};
use serde_json::json;

use super::copy::{self, CopyError};
use super::events::{Event, Reporter, StepInfo};
use super::fetch::{self, FetchError};
use super::secrets::{Secret, SecretError, SshAgent};
use super::state::{ImageState, step_key};
use super::userdb;
use crate::dockerfile::{self, Command, CommandLine, Dockerfile, Instruction};
use crate::dockerignore::{Dockerignore, Verdict};
use crate::plan::{self, Base, ImageContext, Plan, PlanOptions, Platform, Stage};
use crate::shell_words::Variables;

mod copy_step;
mod run_step;

use copy_step::path_sources;

/// `--network` of RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Host,
    None,
}

/// Which layers `--squash`/`--squash-all` make into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Squash {
    /// The layers the build made (over the target stage's base), as `docker build --squash`.
    NewLayers,
    /// Every layer, the base image's too, as `podman build --squash-all`.
    All,
}

/// A build cache elsewhere (`--cache-from`): given a step's key, puts the state it has for it
/// in the store and returns the state's manifest digest; `None` when it has none.
pub type CacheSource<'a> = &'a (dyn Fn(&str) -> Option<Digest> + Sync);

/// Fetches an image that is not in the store into it.
pub type Puller<'a> = &'a (dyn Fn(&Reference) -> Result<(), String> + Sync);

/// What to build and how.
pub struct BuildOptions<'a> {
    /// The build context directory.
    pub context: PathBuf,
    /// Named contexts (`--build-context NAME=DIR`): `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` read these directories, before any stage or image of that name.
    pub named_contexts: BTreeMap<String, PathBuf>,
    /// Named contexts that are images (`--build-context NAME=docker-image://REF`).
    pub image_contexts: Vec<ImageContext>,
    /// The Dockerfile: a file (inside the context or not), or its text (`-f -`: stdin).
    pub dockerfile: DockerfileSource,
    pub build_args: BTreeMap<String, String>,
    /// Labels for the built image (`--label`), over those its Dockerfile sets.
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// Where to look for a step missing from the store's cache (`--cache-from`).
    pub cache_source: Option<CacheSource<'a>>,
    /// Squash the image's layers into one at the end.
    pub squash: Option<Squash>,
    pub network: Network,
    /// Extra `/etc/hosts` lines for RUN steps (`--add-host NAME:IP`): (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// Resource limits of RUN steps (`--ulimit`).
    pub ulimits: Vec<runner::Ulimit>,
    /// The size of RUN steps' `/dev/shm` (`--shm-size`).
    pub shm_size: Option<u64>,
    pub compression: Compression,
    /// Fetches an image that is not in the store (FROM, COPY --from); `None` to refuse.
    pub pull: Option<Puller<'a>>,
    /// Pull every image the build uses, even those the store has (`--pull`): once a build.
    pub pull_always: bool,
    /// Set when the user interrupts: the build stops at the next chance, leaving nothing.
    pub cancel: &'a AtomicBool,
    /// How step roots are mounted (overlayfs falls back to FUSE where it cannot mount).
    pub storage_driver: StorageDriver,
    /// `--secret`s, for `RUN --mount=type=secret` (a later one wins over an earlier one of
    /// the same id).
    pub secrets: Vec<Secret>,
    /// `--ssh` agents, for `RUN --mount=type=ssh` (likewise).
    pub ssh: Vec<SshAgent>,
}

impl std::fmt::Debug for BuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("context", &self.context)
            .field("dockerfile", &self.dockerfile)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub id: Digest,
    /// Every step's cache entry this build used or made, in order: its key and the manifest
    /// of its state (for `--cache-to`).
    pub cache_entries: Vec<(String, Digest)>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse (already `FILE:LINE: …`).
    #[error("{0}")]
    Parse(String),
    /// A step failed.
    #[error("{file}:{line}: {text}: {source}")]
    Step {
        file: String,
        line: usize,
        text: String,
        #[source]
        source: Box<StepError>,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the build was interrupted")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] layerfs::Error),
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the command returned a non-zero code: {0}")]
    ExitCode(i32),
    #[error("the command was killed by signal {0}")]
    Signal(i32),
    #[error("the command was killed: out of memory")]
    OutOfMemory,
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Fetch(Box<FetchError>),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("--mount={spec}: {reason}")]
    Mount { spec: String, reason: String },
    #[error(transparent)]
    Expand(#[from] crate::shell_words::ExpandError),
    #[error(transparent)]
    Store(#[from] layerfs::Error),
    #[error("{0}")]
    Other(String),
}

impl From<FetchError> for StepError {
    fn from(e: FetchError) -> Self {
        StepError::Fetch(Box::new(e))
    }
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    /// A file; `NAME.dockerignore` beside it wins over the context's `.dockerignore`.
    File(PathBuf),
    /// The text itself (read from stdin by `-f -`); errors call it `Dockerfile`.
    Text(String),
}

/// Builds the target of `opts` and stores the result (untagged: the caller tags it).
pub fn build(
    store: &Store,
    opts: &BuildOptions<'_>,
    reporter: &mut dyn Reporter,
) -> Result<Built, BuildError> {
    let _content = store.lock_content()?;
    let (file, text) = match &opts.dockerfile {
        DockerfileSource::File(path) => (
            path.file_name().map_or_else(
                || "Dockerfile".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            ),
            std::fs::read_to_string(path).map_err(|source| BuildError::Read {
                path: path.clone(),
                source,
            })?,
        ),
        DockerfileSource::Text(text) => ("Dockerfile".to_owned(), text.clone()),
    };
    let df =
        dockerfile::parse(&text).map_err(|e| BuildError::Parse(e.in_file(&file).to_string()))?;
    let plan = plan::plan(
        &df,
        &PlanOptions {
            target: opts.target.as_deref(),
            build_args: &opts.build_args,
            platform: Platform::host(),
            image_contexts: &opts.image_contexts,
        },
    )
    .map_err(|e| BuildError::Parse(e.in_file(&file).to_string()))?;
    let ignore = load_ignore(&opts.context, &opts.dockerfile)?;
    let mut named_contexts = HashMap::new();
    for (name, dir) in &opts.named_contexts {
        let dir_ignore = load_ignore(dir, &DockerfileSource::Text(String::new()))?;
        named_contexts.insert(name.clone(), (dir.clone(), dir_ignore));
    }
    let mut b = Builder {
        store,
        opts,
        df: &df,
        plan: &plan,
        file,
        ignore,
        named_contexts,
        reporter,
        next_id: 0,
        current: 0,
        stages: HashMap::new(),
        fallback: std::sync::Mutex::new(None),
        pulled: std::sync::Mutex::default(),
        base_layers: HashMap::new(),
        cache_entries: Vec::new(),
    };
    for stage in plan.build_order() {
        b.current = stage.index;
        let state = b.stage(stage)?;
        b.stages.insert(stage.index, state);
    }
    let unused = plan.unused_build_args();
    if !unused.is_empty() {
        b.reporter.event(Event::Note(format!(
            "warning: build arguments not consumed by any ARG: {}",
            unused.join(", ")
        )));
    }
    let mut state = b
        .stages
        .remove(&plan.target)
        .expect("the target stage was built");
    if !opts.labels.is_empty() {
        state
            .config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(opts.labels.clone());
    }
    if let Some(squash) = opts.squash {
        let keep = match squash {
            Squash::NewLayers => b.base_layers[&plan.target],
            Squash::All => 0,
        };
        let commit = CommitOptions {
            compression: opts.compression,
            clamp_mtime: source_date_epoch(),
        };
        state = state.squashed(store, keep, commit)?;
    }
    let manifest = state.save(store)?;
    Ok(Built {
        id: state.config_digest(),
        manifest,
        cache_entries: b.cache_entries,
    })
}

fn load_ignore(context: &Path, dockerfile: &DockerfileSource) -> Result<Dockerignore, BuildError> {
    // BuildKit reads `<Dockerfile>.dockerignore` next to the Dockerfile first.
    let specific = match dockerfile {
        DockerfileSource::File(path) => Some(path.with_file_name(format!(
            "{}.dockerignore",
            path.file_name().unwrap_or_default().to_string_lossy()
        ))),
        DockerfileSource::Text(_) => None,
    };
    let path = specific
        .into_iter()
        .chain([context.join(".dockerignore")])
        .find(|p| p.is_file());
    let text = match &path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| BuildError::Read {
            path: p.clone(),
            source,
        })?,
        None => String::new(),
    };
    Dockerignore::parse(&text).map_err(|e| {
        BuildError::Parse(format!(
            "{}: {e}",
            path.map_or_else(|| ".dockerignore".into(), |p| p.display().to_string())
        ))
    })
}

struct Builder<'a, 'o> {
    store: &'a Store,
    opts: &'a BuildOptions<'o>,
    df: &'a Dockerfile,
    plan: &'a Plan<'a>,
    file: String,
    ignore: Dockerignore,
    /// The named contexts and their own `.dockerignore`s.
    named_contexts: HashMap<String, (PathBuf, Dockerignore)>,
    reporter: &'a mut dyn Reporter,
    next_id: usize,
    /// The stage being built.
    current: usize,
    /// Finished stages' states, by stage index.
    stages: HashMap<usize, ImageState>,
    /// Why step roots are on FUSE although overlayfs was asked for: reported once.
    fallback: std::sync::Mutex<Option<Option<String>>>,
    /// The images pulled by this build (`--pull` pulls each one once).
    pulled: std::sync::Mutex<std::collections::HashSet<String>>,
    /// How many layers each stage built so far started from (its base's).
    base_layers: HashMap<usize, usize>,
    /// The cache entries used or made, in order (see [`Built::cache_entries`]).
    cache_entries: Vec<(String, Digest)>,
}

/// What a `.dockerignore` verdict means to a source walk.
fn visit(ignore: &Dockerignore, path: &Path, is_dir: bool) -> Visit {
    match ignore.check(&path.to_string_lossy(), is_dir) {
        Verdict::Included => Visit::Include,
        Verdict::Excluded => Visit::Descend,
        Verdict::ExcludedTree => Visit::Skip,
    }
}

/// The variables of a step: ENV of the image, then the ARGs in scope (ENV wins).
struct Scope<'s> {
    env: &'s [String],
    args: &'s BTreeMap<String, String>,
}

impl Variables for Scope<'_> {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        for kv in self.env.iter().rev() {
            if let Some((k, v)) = kv.split_once('=')
                && k == name
            {
                return Some(v.into());
            }
        }
        self.args.get(name).map(|v| v.as_str().into())
    }
}

impl Builder<'_, '_> {
    fn step_err(&self, ins: &Instruction, source: impl Into<StepError>) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: ins.location.start,
            text: ins.original.clone(),
            source: Box::new(source.into()),
        }
    }

    fn check_cancel(&self) -> Result<(), BuildError> {
        if self.opts.cancel.load(Ordering::Relaxed) {
            Err(BuildError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Builds one stage and returns its final state.
    fn stage(&mut self, stage: &Stage<'_>) -> Result<ImageState, BuildError> {
        let stage_label = stage
            .name
            .map_or_else(|| format!("stage-{}", stage.index), str::to_owned);
        let instructions = stage.instructions;
        let total = instructions.len() + 1;
        let from_ins = stage.from;
        let id = self.start(&stage_label, 1, total, from_ins);
        let started = Instant::now();
        let mut state = self.base(&stage.base, from_ins)?;
        self.base_layers.insert(stage.index, state.layers.len());
        self.reporter.event(Event::Cached { id });
        self.reporter.event(Event::Done {
            id,
            elapsed: started.elapsed(),
        });
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        // ONBUILD triggers of the base image run first, then leave the config.
        let triggers = state.config.config.on_build.take().unwrap_or_default();
        let mut pending: Vec<Instruction> = Vec::new();
        for t in &triggers {
            let ins = dockerfile::parse_trigger(t).map_err(|e| {
                BuildError::Parse(
                    e.in_file(&format!("{} (ONBUILD of its base)", self.file))
                        .to_string(),
                )
            })?;
            pending.push(ins);
        }
        let all: Vec<&Instruction> = pending.iter().chain(instructions.iter()).collect();
        for (i, ins) in all.into_iter().enumerate() {
            self.check_cancel()?;
            let id = self.start(&stage_label, i + 2, total + triggers.len(), ins);
            let started = Instant::now();
            let done = self.step(&mut state, &mut args, ins, id);
            let note = self
                .fallback
                .lock()
                .ok()
                .and_then(|mut f| f.as_mut().and_then(Option::take));
            if let Some(note) = note {
                self.reporter.event(Event::Note(format!("note: {note}")));
            }
            match done {
                Ok(()) => self.reporter.event(Event::Done {
                    id,
                    elapsed: started.elapsed(),
                }),
                Err(e) => {
                    self.reporter.event(Event::Failed {
                        id,
                        error: e.to_string(),
                    });
                    return Err(e);
                }
            }
        }
        Ok(state)
    }

    fn start(&mut self, stage: &str, index: usize, total: usize, ins: &Instruction) -> usize {
        self.next_id += 1;
        self.reporter.event(Event::Start(StepInfo {
            id: self.next_id,
            stage: stage.to_owned(),
            index,
            total,
            text: ins.original.clone(),
        }));
        self.next_id
    }

    /// The state a FROM starts from.
    fn base(&mut self, base: &Base, ins: &Instruction) -> Result<ImageState, BuildError> {
        match base {
            Base::Scratch => Ok(ImageState::scratch()),
            Base::Stage(i) => Ok(self.stages[i].clone()),
            Base::Image { name, .. } => {
                let image = self.image(name).map_err(|e| self.step_err(ins, e))?;
                Ok(ImageState::of_image(&image))
            }
        }
    }

    /// An image from the store, pulled first if it is not there (or, with `--pull`, if this
    /// build has not pulled it yet).
    fn image(&self, name: &str) -> Result<layerfs::store::Image, StepError> {
        let fresh = self.opts.pull_always
            && !self
                .pulled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(name);
        if !fresh {
            match self.store.resolve_image(name) {
                Err(layerfs::Error::ImageNotFound(_)) => {}
                found => return Ok(found?),
            }
        }
        let reference = Reference::parse(name).map_err(|e| StepError::Other(e.to_string()))?;
        let Some(pull) = self.opts.pull else {
            return Err(StepError::Other(format!(
                "image {name} is not in the store"
            )));
        };
        pull(&reference).map_err(|e| StepError::Other(format!("pulling {name}: {e}")))?;
        self.pulled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned());
        Ok(self.store.resolve_image(&reference.to_string())?)
    }

    /// Runs one step (or takes it from the cache), updating `state`.
    fn step(
        &mut self,
        state: &mut ImageState,
        args: &mut BTreeMap<String, String>,
        ins: &Instruction,
        id: usize,
    ) -> Result<(), BuildError> {
        let lexer = self.df.lexer();
        if let Command::Arg(decls) = &ins.command {
            for d in decls {
                let value = plan::resolve_arg(
                    d,
                    &self.opts.build_args,
                    &self.plan.global,
                    &lexer,
                    &Scope {
                        env: state.config.config.env.as_deref().unwrap_or_default(),
                        args,
                    },
                )
                .map_err(|e| self.step_err(ins, e))?;
                match value {
                    Some(v) => {
                        args.insert(d.name.clone(), v);
                    }
                    None => {
                        args.remove(&d.name);
                    }
                }
            }
            // ARG changes no config, but what follows depends on the values.
            state.key = step_key(&state.key, &json!({ "arg": args }));
            self.reporter.event(Event::Cached { id });
            return Ok(());
        }
        let env = state.config.config.env.clone().unwrap_or_default();
        let command = ins
            .command
            .expand(&lexer, &Scope { env: &env, args })
            .map_err(|e| self.step_err(ins, e))?;
        // ADD's URL sources: without --checksum they are downloaded now, since their content
        // keys the step (as BuildKit does); with it, the checksum keys the step and they are
        // downloaded only if it runs.
        let (urls, checksum) = match &command {
            Command::Copy(c) | Command::Add(c) => fetch::url_sources(
                &path_sources(c),
                matches!(command, Command::Add(_)),
                c.checksum.as_deref(),
            )
            .map_err(|e| self.step_err(ins, e))?,
            _ => (Vec::new(), None),
        };
        let mut downloads = match (urls.is_empty(), &checksum) {
            (false, None) => Some(self.download(ins, &urls, None)?),
            _ => None,
        };
        // What the step depends on besides its parent.
        let mut key_input =
            json!({ "instruction": serde_json::to_value(&command).expect("the AST serializes") });
        match &command {
            Command::Run(run) => {
                key_input["args"] = json!(args);
                key_input["network"] = json!(format!("{:?}", self.opts.network));
                if !self.opts.extra_hosts.is_empty() {
                    key_input["extra_hosts"] = json!(self.opts.extra_hosts);
                }
                if !self.opts.ulimits.is_empty() {
                    key_input["ulimits"] = json!(self.opts.ulimits);
                }
                if let Some(size) = self.opts.shm_size {
                    key_input["shm_size"] = json!(size);
                }
                if !run.mounts.is_empty() {
                    key_input["mounts"] =
                        self.mounts_key(run).map_err(|e| self.step_err(ins, e))?;
                }
            }
            Command::Copy(c) | Command::Add(c) => {
                let hash = self.copy_key(c).map_err(|e| self.step_err(ins, e))?;
                key_input["sources"] = json!(hash);
                if let Some(d) = &downloads {
                    let files: Vec<_> = d
                        .files
                        .iter()
                        .map(|f| json!({ "url": f.url, "digest": f.digest.to_string(), "mtime": f.mtime }))
                        .collect();
                    key_input["urls"] = json!(files);
                } else if let Some(sum) = &checksum {
                    key_input["urls"] = json!([{ "url": urls.first(), "digest": sum.to_string() }]);
                }
            }
            _ => {}
        }
        let key = step_key(&state.key, &key_input);
        if !self.opts.no_cache
            && let Some(cached) = self.cached(&key)
        {
            *state = cached;
            self.reporter.event(Event::Cached { id });
            return Ok(());
        }
        let mut next = state.clone();
        next.key = key;
        let created_by = history_text(&command, ins);
        let changed_fs = match &command {
            Command::Run(run) => self.run(&mut next, args, run, ins, id)?,
            Command::Copy(c) | Command::Add(c) => {
                if downloads.is_none() && !urls.is_empty() {
                    downloads = Some(self.download(ins, &urls, checksum.as_ref())?);
                }
                let is_add = matches!(command, Command::Add(_));
                self.copy(&mut next, c, is_add, downloads.as_ref())
                    .map_err(|e| self.step_err(ins, e))?
            }
            Command::Workdir(dir) => {
                let cfg = &mut next.config.config;
                let path = resolve_workdir(cfg.working_dir.as_deref(), dir);
                cfg.working_dir = Some(path.clone());
                self.workdir(&mut next, &path)
                    .map_err(|e| self.step_err(ins, e))?
            }
            other => {
                apply_metadata(&mut next, other);
                false
            }
        };
        let now = rfc3339(creation_time());
        next.config.created = Some(now.clone());
        next.config.history.push(History {
            created: Some(now),
            created_by: Some(created_by),
            comment: Some("strata".into()),
            empty_layer: !changed_fs,
            ..Default::default()
        });
        let saved = next
            .to_cache(self.store)
            .map_err(|e| self.step_err(ins, e))?;
        self.cache_entries
            .push((next.key.clone(), saved.digest().clone()));
        *state = next;
        Ok(())
    }

    /// The state cached for `key`: from the store's cache, or else brought into it from the
    /// `--cache-from` source.
    fn cached(&mut self, key: &str) -> Option<ImageState> {
        let digest = match self.store.cache_get(key) {
            Some(d) => d,
            None => {
                let d = (self.opts.cache_source?)(key)?;
                self.store.cache_put(key, &d).ok()?;
                d
            }
        };
        let state = ImageState::from_manifest(self.store, key, digest.clone())?;
        self.cache_entries.push((key.to_owned(), digest));
        Some(state)
    }

    /// The state `COPY --from=FROM` copies from: an earlier stage, or an image.
    /// The local directory a COPY or bind mount reads, with its `.dockerignore`: the build
    /// context without `--from`, a named context with `--from=NAME`; `None` for a stage or an
    /// image.
    fn local_source(&self, from: Option<&str>) -> Option<(&Path, &Dockerignore)> {
        match from {
            None => Some((&self.opts.context, &self.ignore)),
            Some(name) => self
                .named_contexts
                .get(name)
                .map(|(dir, ignore)| (dir.as_path(), ignore)),
        }
    }

    fn source_state(&self, from: &str) -> Result<ImageState, StepError> {
        match self
            .plan
            .resolve_from(self.current, from)
            .map_err(|e| StepError::Other(e.to_string()))?
        {
            Base::Stage(i) => Ok(self.stages[&i].clone()),
            Base::Scratch => Ok(ImageState::scratch()),
            Base::Image { name, .. } => Ok(ImageState::of_image(&self.image(&name)?)),
        }
    }

    /// A fresh upper and work dir for a step, under the store's tmp.
    fn scratch_dirs(&self) -> Result<Scratch, BuildError> {
        let home = self.store.tmp_path("step");
        let s = Scratch {
            upper: home.join("upper"),
            work: home.join("work"),
            home,
        };
        for d in [&s.upper, &s.work] {
            std::fs::create_dir_all(d).map_err(|e| layerfs::Error::io("create directory", d, e))?;
        }
        Ok(s)
    }

    /// Turns a step's upper dir into the state's new top layer (none if it is empty).
    fn commit(&self, next: &mut ImageState, scratch: &Scratch) -> Result<bool, StepError> {
        let result = (|| {
            let empty = std::fs::read_dir(&scratch.upper)
                .map_err(|e| layerfs::Error::io("read directory", &scratch.upper, e))?
                .next()
                .is_none();
            if empty {
                return Ok(false);
            }
            let opts = CommitOptions {
                compression: self.opts.compression,
                clamp_mtime: source_date_epoch(),
            };
            let layer = commit_dir(self.store, &scratch.upper, next.top_chain().as_ref(), opts)?;
            next.layers.push(layer.blob.descriptor);
            next.config.rootfs.diff_ids.push(layer.blob.diff_id);
            Ok(true)
        })();
        let _ = remove_tree(&scratch.home);
        result
    }

    /// Runs `f` with the state's layers mounted writable at a private mount point; the upper
    /// dir then becomes the new layer.
    fn with_union<T: Send>(
        &self,
        next: &mut ImageState,
        f: impl FnOnce(&Path) -> Result<T, StepError> + Send,
    ) -> Result<(T, bool), StepError> {
        let lowers = lowers_or_empty(self.store, next.layer_dirs(self.store)?);
        let scratch = self
            .scratch_dirs()
            .map_err(|e| StepError::Other(e.to_string()))?;
        let target = scratch.home.join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| layerfs::Error::io("create directory", &target, e))?;
        let spec = UnionSpec {
            lowers,
            upper: scratch.upper.clone(),
            work: scratch.work.clone(),
        };
        let (driver, fallback) = (self.opts.storage_driver, &self.fallback);
        let out = std::thread::scope(|s| {
            s.spawn(|| -> Result<T, StepError> {
                enter_private_mount_namespace()?;
                // A FUSE daemon started from here lives in this namespace too.
                let union = mount_union(driver, &spec, &target)?;
                if let (Some(why), Ok(mut noted)) = (union.fallback(), fallback.lock())
                    && noted.is_none()
                {
                    *noted = Some(Some(why.to_owned()));
                }
                let r = f(&target);
                union.unmount()?;
                r
            })
            .join()
            .expect("the mount thread does not panic")
        });
        match out {
            Ok(v) => {
                let changed = self.commit(next, &scratch)?;
                Ok((v, changed))
            }
            Err(e) => {
                let _ = remove_tree(&scratch.home);
                Err(e)
            }
        }
    }

    /// WORKDIR: creates the directory (owned by the current USER) when it is missing.
    fn workdir(&mut self, next: &mut ImageState, path: &str) -> Result<bool, StepError> {
        let user = next.config.config.user.clone().filter(|u| !u.is_empty());
        let path = PathBuf::from(path);
        let (_, changed) = self.with_union(next, move |rootfs| {
            if copy::is_dir_in_root(rootfs, &path) {
                return Ok(());
            }
            let owner = user
                .as_deref()
                .map(|u| userdb::resolve_user(rootfs, u).map_err(StepError::Other))
                .transpose()?;
            copy::create_dirs(rootfs, copy::missing_parents(rootfs, &path, owner, true))?;
            Ok(())
        })?;
        Ok(changed)
    }
}

/// The lower dirs of a union: an image without layers gets the store's empty dir.
fn lowers_or_empty(store: &Store, lowers: Vec<PathBuf>) -> Vec<PathBuf> {
    if lowers.is_empty() {
        vec![store.empty_dir()]
    } else {
        lowers
    }
}

struct Scratch {
    home: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

/// `dest` made absolute against the working directory.
fn absolute(workdir: &str, dest: &str) -> PathBuf {
    if dest.starts_with('/') {
        PathBuf::from(dest)
    } else {
        Path::new(workdir).join(dest)
    }
}

/// WORKDIR: relative paths chain onto the current one; the result is clean and absolute.
fn resolve_workdir(current: Option<&str>, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        PathBuf::from(dir)
    } else {
        Path::new(current.unwrap_or("/")).join(dir)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// `SOURCE_DATE_EPOCH` from the environment.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// What the history says a step did.
fn history_text(command: &Command, ins: &Instruction) -> String {
    match command {
        Command::Run(r) => match &r.command {
            CommandLine::Shell(t) => format!("RUN /bin/sh -c {t}"),
            CommandLine::Exec(a) => format!(
                "RUN {}",
                serde_json::to_string(a).expect("strings serialize")
            ),
        },
        _ => ins.original.clone(),
    }
}

/// The config changes of instructions that touch no files.
fn apply_metadata(next: &mut ImageState, command: &Command) {
    let cfg = &mut next.config.config;
    let shell = || cfg_shell(cfg.shell.as_ref());
    match command {
        Command::Env(kvs) => {
            for kv in kvs {
                cfg.set_env_var(&kv.key, &kv.value);
            }
        }
        Command::Label(kvs) => {
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            for kv in kvs {
                labels.insert(kv.key.clone(), kv.value.clone());
            }
        }
        Command::Expose(ports) => {
            let map = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                let p = if p.contains('/') {
                    p.to_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                map.insert(p, Empty {});
            }
        }
        Command::Volume(vols) => {
            let map = cfg.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                map.insert(v.clone(), Empty {});
            }
        }
        Command::User(u) => cfg.user = Some(u.clone()),
        Command::Cmd(line) => cfg.cmd = Some(command_argv(line, &shell())),
        Command::Entrypoint(line) => {
            cfg.entrypoint = Some(command_argv(line, &shell()));
            // A new entrypoint drops the CMD inherited from the base, as docker does.
            cfg.cmd = None;
        }
        Command::Shell(s) => cfg.shell = Some(s.clone()),
        Command::StopSignal(s) => cfg.stop_signal = Some(s.clone()),
        Command::Healthcheck(h) => cfg.healthcheck = Some(h.clone()),
        Command::Onbuild(o) => cfg
            .on_build
            .get_or_insert_with(Vec::new)
            .push(o.trigger.clone()),
        Command::Maintainer(m) => next.config.author = Some(m.clone()),
        Command::From(_)
        | Command::Arg(_)
        | Command::Run(_)
        | Command::Copy(_)
        | Command::Add(_)
        | Command::Workdir(_) => {}
    }
}

fn cfg_shell(shell: Option<&Vec<String>>) -> Vec<String> {
    shell
        .cloned()
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// CMD/ENTRYPOINT argv: the exec form as is, the shell form through the shell.
fn command_argv(line: &CommandLine, shell: &[String]) -> Vec<String> {
    match line {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(text) => {
            let mut v = shell.to_vec();
            v.push(text.clone());
            v
        }
    }
}

impl ImageState {
    /// The id the state would have as an image: the digest of its config.
    pub fn config_digest(&self) -> Digest {
        layerfs::digest::digest_of(&self.config.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_chains_and_cleans() {
        assert_eq!(resolve_workdir(None, "/a/b"), "/a/b");
        assert_eq!(resolve_workdir(Some("/a/b"), "c"), "/a/b/c");
        assert_eq!(resolve_workdir(Some("/a/b"), "../d/./e/"), "/a/d/e");
        assert_eq!(resolve_workdir(Some("/"), ".."), "/");
    }

    #[test]
    fn shell_form_goes_through_the_shell() {
        let sh = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        assert_eq!(
            command_argv(&CommandLine::Shell("echo hi".into()), &sh),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            command_argv(&CommandLine::Exec(vec!["a".into()]), &sh),
            ["a"]
        );
    }
}
