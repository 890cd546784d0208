//! The build plan: a Dockerfile's stages, what each is built on, which of them the target
//! needs, and the global ARG scope. Pure: no I/O.
//!
//! - A stage starts at each FROM: `FROM IMAGE [AS name]`, `FROM scratch`, or `FROM stage`
//!   (an earlier stage by name, any case). FROM lines are expanded with the *global* scope
//!   only: the ARGs declared before the first FROM, the build arguments that override them,
//!   and the predefined platform ARGs (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`,
//!   `BUILDPLATFORM`…, `TARGETSTAGE`).
//! - `COPY --from=` names an earlier stage, a stage index (from 0), or else an image;
//!   `RUN --mount=…,from=` likewise. Variables are not allowed there, as in docker.
//! - The target is `--target`'s stage, or the last one. Only the stages it needs (its base
//!   chain and what it copies or mounts from, transitively) are built, in Dockerfile order; a
//!   stage nobody needs is never built.
//! - Inside a stage, a global ARG is visible only once an `ARG NAME` re-declares it:
//!   [`resolve_arg`] gives an ARG's value from the build arguments, its default or the global
//!   scope, as docker does. The rest of the scoping (ARG from its line on, ENV winning over
//!   ARG, ARGs not persisted into the image) is the executor's.
//! - The predefined proxy ARGs ([`PROXY_ARGS`]) may be passed as build arguments without being
//!   declared; docker hands them to RUN steps and keeps them out of the image and its history.
//!
//! ONBUILD triggers of a base image may add `COPY --from` dependencies; they are only known
//! once the base image is resolved, and are not part of this plan.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use layerfs::reference::{Reference, ReferenceError};

use crate::dockerfile::{ArgDecl, Command, Dockerfile, Instruction, Location};
use crate::shell_words::{ExpandError, Lexer, NoVariables, Variables};

/// The proxy ARGs docker predefines: usable as build arguments without an ARG instruction.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `name` is one of docker's predefined ARGs (proxy or platform).
pub fn is_predefined_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name) || PLATFORM_ARGS.contains(&name)
}

const PLATFORM_ARGS: [&str; 9] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// An OS/architecture pair as OCI names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`…
    pub architecture: String,
    /// `v7` for `arm/v7`; empty when there is none.
    pub variant: String,
}

impl Platform {
    /// This machine's platform.
    pub fn host() -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: layerfs::config::host_architecture().to_owned(),
            variant: String::new(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What the plan is made for.
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    /// `--target`: the stage to build; the last one when `None`.
    pub target: Option<&'a str>,
    /// `--build-arg`s.
    pub build_args: &'a BTreeMap<String, String>,
    /// The platform built for (and on).
    pub platform: Platform,
    /// Named contexts that are images (`--build-context NAME=docker-image://REF`).
    pub image_contexts: &'a [ImageContext],
}

/// A named context that is an image (`--build-context NAME=docker-image://REF`, as buildx has
/// it): `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` mean the image REF. NAME
/// matches as an image name does (`alpine` is `docker.io/library/alpine:latest`); a stage of
/// that name still comes first.
#[derive(Debug, Clone)]
pub struct ImageContext {
    pub name: Reference,
    /// REF as written.
    pub image: String,
    pub reference: Reference,
}

/// The image `image` (as written) names, or the image context's of that name.
fn image_base(image: &str, contexts: &[ImageContext]) -> Result<Base, ReferenceError> {
    let reference = Reference::parse(image)?;
    Ok(match contexts.iter().find(|c| c.name == reference) {
        Some(c) => Base::Image {
            name: c.image.clone(),
            reference: c.reference.clone(),
        },
        None => Base::Image {
            name: image.to_owned(),
            reference,
        },
    })
}

/// What a stage is built on, or what `COPY --from` copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `scratch`: nothing.
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image.
    Image {
        /// The name as written (after expansion).
        name: String,
        /// The name, parsed.
        reference: Reference,
    },
}

/// One stage.
#[derive(Debug, Clone)]
pub struct Stage<'df> {
    /// Its index (`COPY --from=0`).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<&'df str>,
    /// Its FROM instruction.
    pub from: &'df Instruction,
    /// What it is built on.
    pub base: Base,
    /// `--platform`, expanded.
    pub platform: Option<String>,
    /// Its instructions after FROM.
    pub instructions: &'df [Instruction],
    /// The stages it copies or mounts from (not its base), by index.
    pub uses: BTreeSet<usize>,
    /// Whether the target needs it (only those are built).
    pub needed: bool,
}

/// A Dockerfile's stages, resolved.
#[derive(Debug, Clone)]
pub struct Plan<'df> {
    /// Every stage, in Dockerfile order.
    pub stages: Vec<Stage<'df>>,
    /// The index of the target stage.
    pub target: usize,
    /// The global ARG scope: what FROM lines see, and what `ARG NAME` in a stage inherits.
    pub global: GlobalArgs,
    lexer: Lexer,
    declared_args: BTreeSet<String>,
    build_args: BTreeSet<String>,
    image_contexts: Vec<ImageContext>,
}

impl<'df> Plan<'df> {
    /// The stages to build, in the order to build them.
    pub fn build_order(&self) -> impl Iterator<Item = &Stage<'df>> {
        self.stages.iter().filter(|s| s.needed)
    }

    /// The target stage.
    pub fn target(&self) -> &Stage<'df> {
        &self.stages[self.target]
    }

    /// The stage called `name` (any case).
    pub fn stage_by_name(&self, name: &str) -> Option<&Stage<'df>> {
        self.stages
            .iter()
            .find(|s| s.name.is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// What `COPY --from=FROM` (or a mount's `from=`) in stage `stage` refers to: an earlier
    /// stage by name or index, or an image.
    pub fn resolve_from(&self, stage: usize, from: &str) -> Result<Base, PlanErrorKind> {
        resolve_from(
            &self.stages[..stage],
            &self.stages,
            stage,
            from,
            &self.lexer,
            &self.image_contexts,
        )
    }

    /// Build arguments that no ARG of the stages built declares (docker warns about them).
    pub fn unused_build_args(&self) -> Vec<&str> {
        self.build_args
            .iter()
            .filter(|a| !self.declared_args.contains(*a) && !is_predefined_arg(a))
            .map(String::as_str)
            .collect()
    }
}

/// The global ARG scope: set names and their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalArgs {
    values: BTreeMap<String, String>,
}

impl GlobalArgs {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every set name and value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Variables for GlobalArgs {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        GlobalArgs::get(self, name).map(Cow::Borrowed)
    }
}

/// The value an `ARG` declaration takes, as docker gives it: the build argument of that name
/// if there is one; else its default, expanded with `vars` (the scope at that line); else, for
/// a bare `ARG NAME`, the global scope's value; else it is declared but unset (`None`).
pub fn resolve_arg(
    decl: &ArgDecl,
    build_args: &BTreeMap<String, String>,
    global: &GlobalArgs,
    lexer: &Lexer,
    vars: &dyn Variables,
) -> Result<Option<String>, ExpandError> {
    if let Some(value) = build_args.get(&decl.name) {
        return Ok(Some(value.clone()));
    }
    match &decl.default {
        Some(default) => lexer.expand_word(default, vars).map(Some),
        None => Ok(global.get(&decl.name).map(str::to_owned)),
    }
}

/// A Dockerfile whose stages do not make a build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    /// The offending instruction's lines, when one is at fault.
    pub location: Option<Location>,
    /// Its text.
    pub text: String,
    /// What is wrong.
    pub kind: PlanErrorKind,
}

/// What is wrong with a Dockerfile's stages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found (the stages are: {stages})")]
    UnknownTarget {
        /// The target asked for.
        target: String,
        /// The stage names there are.
        stages: String,
    },
    /// Two stages with one name.
    #[error("stage name {name:?} is already used by the stage on line {line}")]
    DuplicateStage {
        /// The name.
        name: String,
        /// The line of the first stage.
        line: usize,
    },
    /// A FROM, ARG or `--from` that does not expand.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// A FROM whose image name expands to nothing.
    #[error("the base image name {0:?} is empty after expansion")]
    EmptyBase(String),
    /// An image name that is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A `--from` (or mount `from=`) that cannot be used.
    #[error("--from={from}: {reason}")]
    BadFrom {
        /// The value.
        from: String,
        /// Why not.
        reason: String,
    },
}

impl PlanError {
    /// The error as `FILE:LINE: message (text)`.
    pub fn in_file<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        crate::dockerfile::Located {
            file: Some(file),
            location: self.location,
            message: &self.kind,
            text: &self.text,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::dockerfile::Located {
            file: None,
            location: self.location,
            message: &self.kind,
            text: &self.text,
        }
        .fmt(f)
    }
}

/// Resolves `df`'s stages for `options`.
pub fn plan<'df>(df: &'df Dockerfile, options: &PlanOptions<'_>) -> Result<Plan<'df>, PlanError> {
    let lexer = df.lexer();
    let at = |i: &Instruction| {
        let location = Some(i.location);
        let text = i.original.clone();
        move |kind: PlanErrorKind| PlanError {
            location,
            text: text.clone(),
            kind,
        }
    };
    let first_from = df
        .instructions
        .iter()
        .position(|i| matches!(i.command, Command::From(_)))
        .unwrap_or(df.instructions.len());
    let froms: Vec<usize> = (first_from..df.instructions.len())
        .filter(|&i| matches!(df.instructions[i].command, Command::From(_)))
        .collect();

    // The target's name is known before the global scope (TARGETSTAGE).
    let stage_name = |i: usize| match &df.instructions[i].command {
        Command::From(f) => f.stage_name.as_deref(),
        _ => None,
    };
    let target = match options.target {
        None => froms.len().checked_sub(1),
        Some(t) => froms
            .iter()
            .position(|&i| stage_name(i).is_some_and(|n| n.eq_ignore_ascii_case(t))),
    };
    let Some(target) = target else {
        let names: Vec<&str> = froms.iter().filter_map(|&i| stage_name(i)).collect();
        return Err(PlanError {
            location: None,
            text: String::new(),
            kind: PlanErrorKind::UnknownTarget {
                target: options.target.unwrap_or_default().to_owned(),
                stages: if names.is_empty() {
                    "none has a name".to_owned()
                } else {
                    names.join(", ")
                },
            },
        });
    };

    // The global scope: predefined platform ARGs, then the ARGs before the first FROM.
    let mut global = GlobalArgs::default();
    let p = &options.platform;
    let target_stage = stage_name(froms[target]).unwrap_or("default");
    for (name, value) in [
        ("BUILDPLATFORM", p.to_string()),
        ("BUILDOS", p.os.clone()),
        ("BUILDARCH", p.architecture.clone()),
        ("BUILDVARIANT", p.variant.clone()),
        ("TARGETPLATFORM", p.to_string()),
        ("TARGETOS", p.os.clone()),
        ("TARGETARCH", p.architecture.clone()),
        ("TARGETVARIANT", p.variant.clone()),
        ("TARGETSTAGE", target_stage.to_owned()),
    ] {
        let value = options.build_args.get(name).cloned().unwrap_or(value);
        global.values.insert(name.to_owned(), value);
    }
    let mut declared_args = BTreeSet::new();
    for instruction in &df.instructions[..first_from] {
        let Command::Arg(decls) = &instruction.command else {
            continue;
        };
        for decl in decls {
            declared_args.insert(decl.name.clone());
            let value = resolve_arg(decl, options.build_args, &global, &lexer, &global)
                .map_err(|e| at(instruction)(e.into()))?;
            if let Some(value) = value {
                global.values.insert(decl.name.clone(), value);
            }
        }
    }

    // The stages.
    let mut stages: Vec<Stage<'df>> = Vec::with_capacity(froms.len());
    for (index, &from_at) in froms.iter().enumerate() {
        let instruction = &df.instructions[from_at];
        let err = at(instruction);
        let Command::From(from) = &instruction.command else {
            unreachable!("froms holds FROM instructions")
        };
        let end = froms
            .get(index + 1)
            .copied()
            .unwrap_or(df.instructions.len());
        if let Some(name) = &from.stage_name
            && let Some(first) = stages.iter().find(|s| s.name == Some(name.as_str()))
        {
            return Err(err(PlanErrorKind::DuplicateStage {
                name: name.clone(),
                line: first.from.location.start,
            }));
        }
        let image = lexer
            .expand_word(&from.image, &global)
            .map_err(|e| err(e.into()))?;
        let base = if image.is_empty() {
            return Err(err(PlanErrorKind::EmptyBase(from.image.clone())));
        } else if image == "scratch" {
            Base::Scratch
        } else if let Some(stage) = stages
            .iter()
            .find(|s| s.name.is_some_and(|n| n.eq_ignore_ascii_case(&image)))
        {
            Base::Stage(stage.index)
        } else {
            image_base(&image, options.image_contexts).map_err(|e| err(e.into()))?
        };
        let platform = from
            .platform
            .as_ref()
            .map(|p| lexer.expand_word(p, &global))
            .transpose()
            .map_err(|e| err(e.into()))?;
        stages.push(Stage {
            index,
            name: from.stage_name.as_deref(),
            from: instruction,
            base,
            platform,
            instructions: &df.instructions[from_at + 1..end],
            uses: BTreeSet::new(),
            needed: false,
        });
    }

    // What each stage copies or mounts from.
    for index in 0..stages.len() {
        let mut uses = BTreeSet::new();
        for instruction in stages[index].instructions {
            for from in from_references(&instruction.command) {
                let base = resolve_from(
                    &stages[..index],
                    &stages,
                    index,
                    &from,
                    &lexer,
                    options.image_contexts,
                )
                .map_err(at(instruction))?;
                if let Base::Stage(used) = base {
                    uses.insert(used);
                }
            }
        }
        stages[index].uses = uses;
    }

    // What the target needs.
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut stages[i].needed, true) {
            continue;
        }
        if let Base::Stage(base) = stages[i].base {
            todo.push(base);
        }
        todo.extend(stages[i].uses.iter().copied());
    }
    for stage in stages.iter().filter(|s| s.needed) {
        for instruction in stage.instructions {
            if let Command::Arg(decls) = &instruction.command {
                declared_args.extend(decls.iter().map(|d| d.name.clone()));
            }
        }
    }

    Ok(Plan {
        stages,
        target,
        global,
        lexer,
        declared_args,
        build_args: options.build_args.keys().cloned().collect(),
        image_contexts: options.image_contexts.to_vec(),
    })
}

/// The `--from` values of a COPY and the `from=` of a RUN's mounts.
fn from_references(command: &Command) -> Vec<String> {
    match command {
        Command::Copy(copy) => copy.from.iter().cloned().collect(),
        Command::Run(run) => run
            .mounts
            .iter()
            .filter_map(|m| {
                m.split(',')
                    .find_map(|field| field.trim().strip_prefix("from="))
                    .map(str::to_owned)
            })
            .collect(),
        Command::Onbuild(_) => Vec::new(),
        _ => Vec::new(),
    }
}

/// Resolves a `--from` of stage `current` against the stages `before` it (`all` for the
/// message about a later one).
fn resolve_from(
    before: &[Stage<'_>],
    all: &[Stage<'_>],
    current: usize,
    from: &str,
    lexer: &Lexer,
    image_contexts: &[ImageContext],
) -> Result<Base, PlanErrorKind> {
    let bad = |reason: String| PlanErrorKind::BadFrom {
        from: from.to_owned(),
        reason,
    };
    if lexer.expand_word(from, &NoVariables).ok().as_deref() != Some(from) {
        return Err(bad("variables are not supported in --from; declare a global ARG and a stage `FROM ${ARG} AS name`, then use --from=name".to_owned()));
    }
    if let Ok(index) = from.parse::<usize>() {
        return if index < before.len() {
            Ok(Base::Stage(index))
        } else {
            Err(bad(format!(
                "there is no stage {index} before this one (stages count from 0, and this is stage {current})"
            )))
        };
    }
    if let Some(stage) = before
        .iter()
        .find(|s| s.name.is_some_and(|n| n.eq_ignore_ascii_case(from)))
    {
        return Ok(Base::Stage(stage.index));
    }
    if let Some(later) = all[current..]
        .iter()
        .find(|s| s.name.is_some_and(|n| n.eq_ignore_ascii_case(from)))
    {
        return Err(bad(format!(
            "stage {from:?} (line {}) is not defined before this one; a stage can only use earlier stages",
            later.from.location.start
        )));
    }
    if from == "scratch" {
        return Ok(Base::Scratch);
    }
    Ok(image_base(from, image_contexts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        }
    }

    fn make<'df>(
        df: &'df Dockerfile,
        target: Option<&str>,
        build_args: &BTreeMap<String, String>,
    ) -> Result<Plan<'df>, PlanError> {
        plan(
            df,
            &PlanOptions {
                target,
                build_args,
                platform: amd64(),
                image_contexts: &[],
            },
        )
    }

    fn order(p: &Plan<'_>) -> Vec<usize> {
        p.build_order().map(|s| s.index).collect()
    }

    const MULTISTAGE: &str = "FROM busybox AS build\nRUN mkdir /out\nFROM busybox AS unused\nRUN exit 1\n\
        FROM build AS test\nRUN echo tested\nFROM busybox\nCOPY --from=build /out/artifact /artifact\n\
        COPY --from=test /out/tested /tested\nRUN test ! -e /out\n";

    #[test]
    fn image_contexts_replace_images_by_normalized_name_but_not_stages() {
        let df = parse(
            "FROM alpine:latest AS tools\nFROM docker.io/library/alpine\n\
             COPY --from=tools /a /a\nCOPY --from=helper /b /b\n",
        )
        .unwrap();
        let context = |name: &str, image: &str| ImageContext {
            name: Reference::parse(name).unwrap(),
            image: image.to_owned(),
            reference: Reference::parse(image).unwrap(),
        };
        let contexts = [
            context("alpine", "mirror.example/alpine:3.20"),
            context("tools", "busybox:1.36"),
            context("helper", "busybox:1.37"),
        ];
        let none = BTreeMap::new();
        let p = plan(
            &df,
            &PlanOptions {
                target: None,
                build_args: &none,
                platform: amd64(),
                image_contexts: &contexts,
            },
        )
        .unwrap();
        let image = |b: &Base| match b {
            Base::Image { name, .. } => name.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(image(&p.stages[0].base), "mirror.example/alpine:3.20");
        assert_eq!(image(&p.stages[1].base), "mirror.example/alpine:3.20");
        assert_eq!(p.resolve_from(1, "tools").unwrap(), Base::Stage(0));
        assert_eq!(image(&p.resolve_from(1, "helper").unwrap()), "busybox:1.37");
        assert_eq!(image(&p.resolve_from(1, "other").unwrap()), "other");
    }

    #[test]
    fn stages_nobody_needs_are_not_built() {
        let df = parse(MULTISTAGE).unwrap();
        let none = BTreeMap::new();
        let p = make(&df, None, &none).unwrap();
        assert_eq!(p.stages.len(), 4);
        assert_eq!(p.target, 3);
        assert_eq!(order(&p), [0, 2, 3]);
        assert_eq!(p.stages[2].base, Base::Stage(0));
        assert_eq!(p.stages[3].uses, BTreeSet::from([0, 2]));
        assert_eq!(p.stages[3].instructions.len(), 3);
        let Base::Image { name, reference } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(name, "busybox");
        assert_eq!(reference.to_string(), "docker.io/library/busybox:latest");

        let p = make(&df, Some("build"), &none).unwrap();
        assert_eq!(order(&p), [0]);
        let p = make(&df, Some("UNUSED"), &none).unwrap();
        assert_eq!(order(&p), [1]);
        assert_eq!(p.target().name, Some("unused"));
        assert_eq!(p.stage_by_name("Test").map(|s| s.index), Some(2));
        let err = make(&df, Some("nope"), &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "target stage \"nope\" could not be found (the stages are: build, unused, test)"
        );
    }

    #[test]
    fn global_args_in_from_lines() {
        let df = parse("ARG BASE=busybox\nARG TAG\nARG REPO=${BASE}\nFROM ${REPO}:${TAG:-latest}\nARG BASE\nARG V=${BASE}-x\nRUN true\n").unwrap();
        let none = BTreeMap::new();
        let p = make(&df, None, &none).unwrap();
        let Base::Image { name, .. } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(name, "busybox:latest");
        assert_eq!(p.global.get("TAG"), None, "a bare global ARG stays unset");
        assert_eq!(p.global.get("REPO"), Some("busybox"));
        let given = args(&[("BASE", "alpine"), ("TAG", "3")]);
        let p = make(&df, None, &given).unwrap();
        let Base::Image { name, .. } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(name, "alpine:3");

        // In the stage, `ARG BASE` takes the global value; `ARG V=${BASE}-x` expands its
        // default with the stage's scope (the executor's), unless a build arg overrides it.
        let Command::Arg(decls) = &p.stages[0].instructions[0].command else {
            panic!()
        };
        let lexer = df.lexer();
        let none = BTreeMap::new();
        let base = resolve_arg(&decls[0], &none, &p.global, &lexer, &NoVariables).unwrap();
        assert_eq!(base.as_deref(), Some("alpine"));
        let Command::Arg(decls) = &p.stages[0].instructions[1].command else {
            panic!()
        };
        let scope = args(&[("BASE", "alpine")]);
        let v = resolve_arg(&decls[0], &none, &p.global, &lexer, &scope).unwrap();
        assert_eq!(v.as_deref(), Some("alpine-x"));
        let v = resolve_arg(
            &decls[0],
            &args(&[("V", "given")]),
            &p.global,
            &lexer,
            &scope,
        )
        .unwrap();
        assert_eq!(v.as_deref(), Some("given"));
    }

    #[test]
    fn predefined_platform_args() {
        let df = parse("FROM busybox:${TARGETARCH} AS b\nFROM --platform=$BUILDPLATFORM busybox\n")
            .unwrap();
        let none = BTreeMap::new();
        let p = make(&df, None, &none).unwrap();
        let Base::Image { name, .. } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(name, "busybox:amd64");
        assert_eq!(p.stages[1].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(p.global.get("TARGETSTAGE"), Some("default"));
        let p = make(&df, Some("b"), &none).unwrap();
        assert_eq!(p.global.get("TARGETSTAGE"), Some("b"));
        let p = make(&df, None, &args(&[("TARGETARCH", "arm64")])).unwrap();
        let Base::Image { name, .. } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(name, "busybox:arm64");
        assert!(Platform::host().to_string().starts_with("linux/"));
    }

    #[test]
    fn copy_from_stage_index_or_image() {
        let df = parse("FROM scratch AS a\nFROM busybox\nCOPY --from=0 /x /x\nCOPY --from=A /y /y\nCOPY --from=alpine:3 /z /z\nRUN --mount=type=bind,from=a,target=/m true\n").unwrap();
        let none = BTreeMap::new();
        let p = make(&df, None, &none).unwrap();
        assert_eq!(p.stages[0].base, Base::Scratch);
        assert_eq!(p.stages[1].uses, BTreeSet::from([0]));
        assert_eq!(order(&p), [0, 1]);
        assert_eq!(p.resolve_from(1, "a"), Ok(Base::Stage(0)));
        let Ok(Base::Image { reference, .. }) = p.resolve_from(1, "alpine:3") else {
            panic!()
        };
        assert_eq!(reference.to_string(), "docker.io/library/alpine:3");
        assert!(
            p.resolve_from(1, "1").is_err(),
            "a stage cannot copy from itself"
        );
    }

    #[test]
    fn bad_plans_name_the_line() {
        let none = BTreeMap::new();
        for (text, line, says) in [
            (
                "FROM a AS x\nFROM b AS X\n",
                2,
                "stage name \"x\" is already used by the stage on line 1",
            ),
            (
                "FROM busybox\nCOPY --from=later /a /a\nFROM busybox AS later\n",
                2,
                "stage \"later\" (line 3) is not defined before this one",
            ),
            (
                "FROM busybox\nCOPY --from=1 /a /a\n",
                2,
                "there is no stage 1 before this one",
            ),
            (
                "ARG V=x\nFROM busybox\nCOPY --from=$V /a /a\n",
                3,
                "variables are not supported in --from",
            ),
            (
                "FROM ${NOTHING}\n",
                1,
                "the base image name \"${NOTHING}\" is empty",
            ),
            ("FROM ${NEED:?unset}\n", 1, "NEED: unset"),
            ("FROM Busybox\n", 1, "must be lowercase"),
            (
                "FROM busybox\nCOPY --from=Bad:Name /a /a\n",
                2,
                "must be lowercase",
            ),
            ("ARG X=\"${Y:?no Y}\"\nFROM busybox\n", 1, "Y: no Y"),
        ] {
            let df = parse(text).unwrap();
            let err = make(&df, None, &none).unwrap_err();
            assert_eq!(err.location.map(|l| l.start), Some(line), "{text}: {err}");
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(
                err.in_file("Dockerfile")
                    .to_string()
                    .starts_with(&format!("Dockerfile:{line}: "))
            );
        }
    }

    #[test]
    fn unused_build_args_are_reported() {
        let df = parse("ARG G\nFROM busybox AS a\nARG USED\nFROM busybox\nARG LATE\n").unwrap();
        let given = args(&[
            ("G", "1"),
            ("USED", "1"),
            ("LATE", "1"),
            ("TYPO", "1"),
            ("http_proxy", "p"),
        ]);
        let p = make(&df, None, &given).unwrap();
        assert_eq!(p.unused_build_args(), ["TYPO", "USED"]);
        let p = make(&df, Some("a"), &given).unwrap();
        assert_eq!(p.unused_build_args(), ["LATE", "TYPO"]);
        assert!(is_predefined_arg("HTTPS_PROXY") && is_predefined_arg("TARGETOS"));
        assert!(!is_predefined_arg("PATH"));
    }

    /// The repository's own Dockerfiles (quick start, benchmarks) plan as they mean to.
    #[test]
    fn repository_dockerfiles() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfiles");
        let none = BTreeMap::new();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path().join("Dockerfile");
            if !file.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let df = parse(&text)
                .unwrap_or_else(|e| panic!("{}", e.in_file(&file.display().to_string())));
            make(&df, None, &none)
                .unwrap_or_else(|e| panic!("{}", e.in_file(&file.display().to_string())));
            seen += 1;
        }
        assert!(seen >= 2, "Dockerfiles/ holds the demo and the bench");

        let text = std::fs::read_to_string(dir.join("bench/Dockerfile")).unwrap();
        let df = parse(&text).unwrap();
        let p = make(&df, None, &none).unwrap();
        assert_eq!(order(&p), [0, 1, 2]);
        assert_eq!(p.stages[2].uses, BTreeSet::from([0, 1]));
        for stage in &p.stages {
            let Base::Image { name, .. } = &stage.base else {
                panic!("{:?}", stage.base)
            };
            assert_eq!(name, "busybox");
        }
        let given = args(&[("BASE", "localhost:5000/busybox:1")]);
        let p = make(&df, Some("deps"), &given).unwrap();
        assert_eq!(order(&p), [0]);
        let Base::Image { reference, .. } = &p.stages[0].base else {
            panic!()
        };
        assert_eq!(reference.registry(), "localhost:5000");
    }
}
