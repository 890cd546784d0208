//! RUN steps: the command in the sandbox over the parent's layers, with its `--mount`s
//! (binds, caches, tmpfs, secrets, ssh agents) prepared on the host side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use layerfs::mount::{UnionSpec, enter_private_mount_namespace, mount_union, mount_union_readonly};
use layerfs::store::remove_tree;
use serde_json::json;

use super::{BuildError, Builder, Network, Scratch, StepError, absolute, lowers_or_empty, visit};
use crate::build::copy::{self, CopyError, CopyPlan, Placement, Rewrite, SourceRoot};
use crate::build::events::Event;
use crate::build::run_mount::{MountKind, RunMount};
use crate::build::secrets::{Access, Forwarding, SecretError, StepSecrets};
use crate::build::state::{DEFAULT_PATH_ENV, ImageState};
use crate::dockerfile::{self, CommandLine, Instruction, RunScript};

impl Builder<'_, '_> {
    /// RUN: the command in the sandbox over the parent's layers; returns whether it changed
    /// the filesystem.
    pub(super) fn run(
        &mut self,
        next: &mut ImageState,
        args: &BTreeMap<String, String>,
        run: &dockerfile::Run,
        ins: &Instruction,
        id: usize,
    ) -> Result<bool, BuildError> {
        let mounts = parse_mounts(run).map_err(|e| self.step_err(ins, e))?;
        let cfg = &next.config.config;
        let shell = cfg
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let mut files: Vec<(String, String)> = Vec::new();
        let argv = match (&run.command, run.shell_script()) {
            (CommandLine::Exec(argv), _) => argv.clone(),
            (_, Some(RunScript::Executable { name, body })) => {
                let path = format!("/.strata-heredoc-{name}");
                files.push((path.clone(), body.into_owned()));
                vec![path]
            }
            (_, Some(RunScript::Shell(text))) => {
                let mut v = shell;
                v.push(text.into_owned());
                v
            }
            (CommandLine::Shell(text), None) => {
                let mut v = shell;
                v.push(text.clone());
                v
            }
        };
        // ARG values are in the environment of RUN, unless ENV sets the same name.
        let mut env: Vec<String> = cfg
            .env
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_PATH_ENV.into()]);
        for (k, v) in args {
            set_env(&mut env, k, v, false);
        }
        let workdir = cfg.working_dir.clone().unwrap_or_else(|| "/".into());
        // The first ssh mount is the agent, unless the environment names one (BuildKit).
        if let Some(sock) = mounts
            .iter()
            .find(|m| m.kind == MountKind::Ssh)
            .and_then(|m| m.target.as_deref())
        {
            set_env(
                &mut env,
                "SSH_AUTH_SOCK",
                &absolute(&workdir, sock).to_string_lossy(),
                false,
            );
        }
        let network = match run.network {
            Some(dockerfile::NetworkMode::None) => Network::None,
            Some(dockerfile::NetworkMode::Host) => Network::Host,
            _ => self.opts.network,
        };
        let lowers = next
            .layer_dirs(self.store)
            .map_err(|e| self.step_err(ins, e))?;
        let step = crate::build::sandbox::RunStep {
            argv,
            env,
            workdir,
            user: cfg.user.clone().filter(|u| !u.is_empty()),
            network,
            files,
            binds: Vec::new(),
            extra_hosts: self.opts.extra_hosts.clone(),
            ulimits: self.opts.ulimits.clone(),
            shm_size: self.opts.shm_size,
        };
        let scratch = self.scratch_dirs()?;
        let mountpoint = scratch.home.join("rootfs");
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| layerfs::Error::io("create directory", &mountpoint, e))?;
        let layers = UnionSpec {
            lowers: lowers_or_empty(self.store, lowers),
            upper: scratch.upper.clone(),
            work: scratch.work.clone(),
        };
        let result = self
            .run_mounts(&mounts, &step.workdir, &scratch)
            .and_then(|host| {
                let StepMounts {
                    binds,
                    sources,
                    secrets,
                    caches,
                    env,
                } = host;
                let mut step = step;
                step.binds = binds;
                for (k, v) in &env {
                    set_env(&mut step.env, k, v, true);
                }
                let reporter = &mut *self.reporter;
                let cancel = self.opts.cancel;
                let driver = self.opts.storage_driver;
                let store = self.store;
                let on_line = &mut |line| reporter.event(Event::Output { id, line });
                let mut run_sandbox = || {
                    crate::build::sandbox::run_step(
                        store,
                        &step,
                        &layers,
                        &mountpoint,
                        driver,
                        cancel,
                        on_line,
                    )
                };
                if sources.is_empty() && secrets.is_empty() {
                    return run_sandbox();
                }
                // Stages and images that mounts read from, and the secrets' tmpfs, are mounted
                // in a namespace of this step's own; the sandbox starts from it and sees them.
                let ran = std::thread::scope(|s| {
                    s.spawn(|| {
                        enter_private_mount_namespace()?;
                        // Held until the step is over (FUSE daemons started from here live in
                        // this namespace too).
                        let mut _mounted = Vec::with_capacity(sources.len());
                        for (lowers, at, upper) in &sources {
                            _mounted.push(match upper {
                                None => mount_union_readonly(driver, lowers, at)?,
                                Some((upper, work)) => mount_union(
                                    driver,
                                    &UnionSpec {
                                        lowers: lowers.clone(),
                                        upper: upper.clone(),
                                        work: work.clone(),
                                    },
                                    at,
                                )?,
                            });
                        }
                        let _forwarding: Forwarding = secrets.materialize()?;
                        run_sandbox()
                    })
                    .join()
                    .expect("the step thread does not panic")
                });
                // The caches stay locked until the step is over.
                drop(caches);
                ran
            });
        let changed = match result {
            Ok(()) => self.commit(next, &scratch),
            Err(e) => {
                let _ = remove_tree(&scratch.home);
                return Err(if self.opts.cancel.load(Ordering::Relaxed) {
                    BuildError::Interrupted
                } else {
                    self.step_err(ins, e)
                });
            }
        };
        changed.map_err(|e| self.step_err(ins, e))
    }

    /// The host side of a RUN step's `--mount`s.
    fn run_mounts(
        &self,
        mounts: &[RunMount],
        workdir: &str,
        scratch: &Scratch,
    ) -> Result<StepMounts, StepError> {
        let mut out = StepMounts {
            binds: Vec::new(),
            sources: Vec::new(),
            secrets: StepSecrets::new(scratch.home.join("secrets")),
            caches: Vec::new(),
            env: Vec::new(),
        };
        for (i, m) in mounts.iter().enumerate() {
            let destination = m
                .target
                .as_deref()
                .map(|t| absolute(workdir, t).to_string_lossy().into_owned());
            let mkdir = |p: &Path| {
                std::fs::create_dir_all(p).map_err(|e| layerfs::Error::io("create directory", p, e))
            };
            let sub = |base: &Path| -> Result<PathBuf, StepError> {
                match &m.source {
                    None => Ok(base.to_owned()),
                    Some(src) => copy::clean(src)
                        .map(|rel| base.join(rel))
                        .ok_or_else(|| CopyError::Outside(src.clone()).into()),
                }
            };
            let access = Access {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            };
            // A bind of the build context or a named one: the directory itself when nothing
            // is ignored and the mount is read-only, else the context as COPY sees it
            // (.dockerignore applied) in a throwaway copy.
            let bind_context = || -> Result<PathBuf, StepError> {
                let (root, ignore) = self
                    .local_source(m.from.as_deref())
                    .ok_or_else(|| StepError::Other("not a build context".into()))?;
                if !m.read_write && ignore.is_empty() {
                    return sub(root);
                }
                let dir = scratch.home.join(format!("bind-{i}"));
                mkdir(&dir)?;
                self.context_bind(m, |plan| Ok(plan.copy_into(&dir)?))?;
                Ok(dir)
            };
            let source = match (m.kind, &m.from) {
                (MountKind::Secret, _) => {
                    // A later --secret of the same id wins; a missing one is no mount.
                    let Some(secret) = self.opts.secrets.iter().rev().find(|s| s.id == m.id) else {
                        if m.required {
                            return Err(SecretError::MissingSecret { id: m.id.clone() }.into());
                        }
                        continue;
                    };
                    let value = secret.value()?;
                    if let Some(var) = &m.env {
                        out.env
                            .push((var.clone(), String::from_utf8_lossy(&value).into_owned()));
                    }
                    if destination.is_none() {
                        continue;
                    }
                    out.secrets.add_file(value, access)
                }
                (MountKind::Ssh, _) => {
                    let Some(agent) = self.opts.ssh.iter().rev().find(|a| a.id == m.id) else {
                        if m.required {
                            return Err(SecretError::MissingAgent { id: m.id.clone() }.into());
                        }
                        continue;
                    };
                    out.secrets.add_agent(&agent.socket, access)
                }
                (MountKind::Tmpfs, _) => {
                    let dir = scratch.home.join(format!("tmpfs-{i}"));
                    mkdir(&dir)?;
                    dir
                }
                (MountKind::Cache, None) => {
                    let owner = (m.mode, m.uid, m.gid);
                    let Some(cache) =
                        self.store
                            .cache_mount(&m.id, m.sharing, owner, self.opts.cancel)?
                    else {
                        return Err(StepError::Other("interrupted".into()));
                    };
                    let dir = sub(&cache.dir)?;
                    out.caches.push(cache);
                    dir
                }
                (MountKind::Bind, None) => bind_context()?,
                (MountKind::Bind, Some(from)) if self.local_source(Some(from)).is_some() => {
                    bind_context()?
                }
                (_, Some(from)) => {
                    let lowers = lowers_or_empty(
                        self.store,
                        self.source_state(from)?.layer_dirs(self.store)?,
                    );
                    let at = scratch.home.join(format!("from-{i}"));
                    mkdir(&at)?;
                    let upper = if m.read_write {
                        let (u, w) = (
                            scratch.home.join(format!("from-{i}-upper")),
                            scratch.home.join(format!("from-{i}-work")),
                        );
                        mkdir(&u)?;
                        mkdir(&w)?;
                        Some((u, w))
                    } else {
                        None
                    };
                    let source = sub(&at)?;
                    out.sources.push((lowers, at, upper));
                    source
                }
            };
            if let Some(destination) = destination {
                out.binds.push(runner::BindMount {
                    source,
                    destination,
                    read_only: !m.read_write,
                });
            }
        }
        Ok(out)
    }

    /// What a RUN step's mounts add to its cache key: what a bind shows (the context's
    /// content hash, or the source stage's key); caches and tmpfs add nothing but their spec.
    pub(super) fn mounts_key(&self, run: &dockerfile::Run) -> Result<serde_json::Value, StepError> {
        let mut out = Vec::new();
        for m in parse_mounts(run)? {
            let content = match (m.kind, &m.from) {
                (MountKind::Bind, from) if self.local_source(from.as_deref()).is_some() => {
                    Some(self.context_bind(&m, |plan| Ok(plan.content_hash()?))?)
                }
                (MountKind::Bind, Some(from)) => Some(self.source_state(from)?.key),
                _ => None,
            };
            out.push(json!({ "mount": m, "content": content }));
        }
        Ok(json!(out))
    }

    /// Runs `f` on the copy plan of what a bind mount of a context (the build context, or
    /// the named one of `from=`) shows: its source there, `.dockerignore` applied, at the
    /// mount's root, owners kept.
    fn context_bind<T>(
        &self,
        m: &RunMount,
        f: impl FnOnce(&CopyPlan<'_>) -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        let (dir, ignore) = self
            .local_source(m.from.as_deref())
            .ok_or_else(|| StepError::Other("not a build context".into()))?;
        let filter = |p: &Path, d: bool| visit(ignore, p, d);
        let root = SourceRoot {
            root: dir,
            filter: Some(&filter),
            keep_owner: true,
        };
        let src = m.source.clone().unwrap_or_else(|| ".".into());
        let items = copy::resolve_sources(std::slice::from_ref(&src), &root, "build context")?;
        f(&CopyPlan {
            root,
            items: &items,
            files: &[],
            placement: Placement {
                dest: PathBuf::from("/"),
                dest_is_dir: true,
            },
            rewrite: Rewrite::default(),
            parents: Vec::new(),
        })
    }
}

/// A stage or image a RUN mount reads: its layer dirs, where to mount them, and the upper and
/// work dirs when the mount is writable.
type SourceMount = (Vec<PathBuf>, PathBuf, Option<(PathBuf, PathBuf)>);

/// The host side of a RUN step's `--mount`s.
struct StepMounts {
    /// Bind mounts for the sandbox.
    binds: Vec<runner::BindMount>,
    /// Stages and images to mount first, in the step's namespace.
    sources: Vec<SourceMount>,
    /// Secret files and agent sockets, made in the step's namespace.
    secrets: StepSecrets,
    /// Cache directories, locked as their `sharing` says until the step is over.
    caches: Vec<layerfs::store::CacheMount>,
    /// Variables the mounts set (`env=` secrets).
    env: Vec<(String, String)>,
}

/// The `--mount`s of a RUN step.
fn parse_mounts(run: &dockerfile::Run) -> Result<Vec<RunMount>, StepError> {
    crate::build::run_mount::parse_all(&run.mounts)
        .map_err(|(spec, reason)| StepError::Mount { spec, reason })
}

/// Sets `key=value` in `env`, replacing an existing value only when `replace` is set.
fn set_env(env: &mut Vec<String>, key: &str, value: &str, replace: bool) {
    let existing = env
        .iter()
        .position(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key));
    match existing {
        Some(i) if replace => env[i] = format!("{key}={value}"),
        Some(_) => {}
        None => env.push(format!("{key}={value}")),
    }
}
