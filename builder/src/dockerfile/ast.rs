//! The typed Dockerfile AST: what [`super::parse`] returns.
//!
//! Values are kept as written (quotes, `$VARS` and escapes included) wherever docker expands
//! them later, in the scope of the step: [`Command::expand`] turns a command into its expanded
//! form. Every type serializes (serde) so that an expanded command can feed a cache key.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

pub use layerfs::config::Healthcheck;

use crate::shell_words::Lexer;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The escape character: `\`, or `` ` `` after a `# escape=`` ` `` directive. It escapes in
    /// variable expansion too: use [`Dockerfile::lexer`].
    pub escape: char,
    /// The value of a `# syntax=` directive (accepted and ignored: strata has one frontend).
    pub syntax: Option<String>,
    /// Every instruction in order, the global ARGs before the first FROM included.
    pub instructions: Vec<Instruction>,
    /// Things that parse but deserve a word to the user (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The lexer that expands this Dockerfile's variables (it knows the escape character).
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.escape)
    }
}

/// Lines of the Dockerfile, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    /// The first line of the instruction.
    pub start: usize,
    /// Its last line (continuation lines and heredoc bodies included).
    pub end: usize,
}

impl Location {
    /// One line.
    pub fn line(line: usize) -> Location {
        Location {
            start: line,
            end: line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.end > self.start {
            write!(f, "lines {}-{}", self.start, self.end)
        } else {
            write!(f, "line {}", self.start)
        }
    }
}

/// Something that parses but is probably a mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// What.
    pub message: String,
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Its lines in the Dockerfile.
    pub location: Location,
    /// The instruction as written, continuation lines joined (comments and heredoc bodies
    /// left out), as BuildKit records it: what error messages and history quote.
    pub original: String,
    /// What it says.
    pub command: Command,
}

impl Instruction {
    /// The instruction's keyword in capitals (`RUN`).
    pub fn keyword(&self) -> &'static str {
        self.command.keyword()
    }
}

/// An instruction's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// `FROM [--platform=P] IMAGE [AS NAME]`
    From(From),
    /// `RUN [--mount=…] [--network=…] [--security=…] COMMAND`
    Run(Run),
    /// `CMD COMMAND`
    Cmd(CommandLine),
    /// `ENTRYPOINT COMMAND`
    Entrypoint(CommandLine),
    /// `ENV K=V [K=V…]` or `ENV K V`
    Env(Vec<KeyValue>),
    /// `ARG NAME[=DEFAULT] […]`
    Arg(Vec<ArgDecl>),
    /// `LABEL K=V [K=V…]` or `LABEL K V`
    Label(Vec<KeyValue>),
    /// `EXPOSE PORT[/PROTO] […]`, as written (a port may be `$VAR`, even several ports).
    Expose(Vec<String>),
    /// `VOLUME PATH […]` or `VOLUME ["PATH", …]`
    Volume(Vec<String>),
    /// `USER NAME|UID[:GROUP|GID]`
    User(String),
    /// `WORKDIR PATH`
    Workdir(String),
    /// `COPY [--from=…] [--chown=…] [--chmod=…] [--link] [--exclude=…] SRC… DEST`
    Copy(Copy),
    /// `ADD [--checksum=…] [--chown=…] [--chmod=…] [--link] [--exclude=…] SRC… DEST`
    Add(Copy),
    /// `SHELL ["EXECUTABLE", "PARAMETERS"…]`
    Shell(Vec<String>),
    /// `STOPSIGNAL SIGNAL`
    StopSignal(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [--interval=…] … CMD COMMAND`, as docker stores it in
    /// the image config: `test` is `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", text]`,
    /// durations in nanoseconds (0: docker's default).
    Healthcheck(Healthcheck),
    /// `ONBUILD INSTRUCTION`
    Onbuild(Onbuild),
    /// `MAINTAINER NAME` (deprecated by docker; sets the image's author)
    Maintainer(String),
}

impl Command {
    /// The keyword in capitals.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Label(_) => "LABEL",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Shell(_) => "SHELL",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// `FROM`: the start of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The base as written: an image reference, `scratch`, or an earlier stage's name; it may
    /// use the global ARGs (`FROM ${BASE}`): see [`crate::plan`].
    pub image: String,
    /// The stage's name (`AS name`), lower-cased as docker does.
    pub stage_name: Option<String>,
    /// `--platform`, as written (it may use the global ARGs too).
    pub platform: Option<String>,
}

/// A command in shell form (run by the image's shell) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CommandLine {
    /// `RUN echo hi`: the text, handed to the shell (`SHELL`, default `/bin/sh -c`) as is.
    Shell(String),
    /// `RUN ["echo", "hi"]`: the argv (it may be empty: `CMD []`).
    Exec(Vec<String>),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What to run; for the shell form with heredocs see [`Run::shell_script`].
    pub command: CommandLine,
    /// The heredocs of a shell-form `RUN <<EOF`, in order.
    pub heredocs: Vec<Heredoc>,
    /// Each `--mount=` value, as written (expanded by [`Command::expand`]).
    pub mounts: Vec<String>,
    /// `--network=`.
    pub network: Option<NetworkMode>,
    /// `--security=`.
    pub security: Option<SecurityMode>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetworkMode {
    /// `default`: the build's network.
    Default,
    /// `none`: loopback only.
    None,
    /// `host`: the host's network.
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SecurityMode {
    /// `sandbox`: the default.
    Sandbox,
    /// `insecure`: all capabilities (docker requires an entitlement for it).
    Insecure,
}

/// What a shell-form `RUN` with heredocs runs, as BuildKit does it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript<'a> {
    /// Hand this text to the shell (`SHELL`, default `/bin/sh -c TEXT`).
    Shell(Cow<'a, str>),
    /// `RUN <<EOF` whose body starts with `#!`: write `body` to a file called `name`, mode
    /// 0755, and execute that file directly (no shell).
    Executable {
        /// The heredoc's delimiter, the file's name.
        name: &'a str,
        /// The script.
        body: Cow<'a, str>,
    },
}

impl Run {
    /// What a shell-form RUN runs: its text; or, for `RUN <<EOF` alone, the heredoc's body
    /// (as an executable when it starts with `#!`); or, when heredocs feed a command
    /// (`RUN python3 <<EOF`), the command followed by the heredoc bodies and their
    /// delimiters, for the shell to read. `None` for the exec form.
    pub fn shell_script(&self) -> Option<RunScript<'_>> {
        let CommandLine::Shell(text) = &self.command else {
            return None;
        };
        let Some(first) = self.heredocs.first() else {
            return Some(RunScript::Shell(Cow::Borrowed(text)));
        };
        if super::syntax::heredoc_marker(text).ok().flatten().is_some() {
            let body = first.text();
            return Some(if body.starts_with("#!") {
                RunScript::Executable {
                    name: &first.name,
                    body,
                }
            } else {
                RunScript::Shell(body)
            });
        }
        let mut full = text.clone();
        for doc in &self.heredocs {
            full.push('\n');
            full.push_str(&doc.body);
            full.push_str(&doc.name);
        }
        Some(RunScript::Shell(Cow::Owned(full)))
    }
}

/// A here-document (`<<EOF` … `EOF`) of RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter, quotes removed (`<<"EOF"` is `EOF`): for COPY, the file's name.
    pub name: String,
    /// The lines between the marker and the delimiter, each with its line ending, as written.
    pub body: String,
    /// Whether `$VARS` in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from the body's lines (and the delimiter's).
    pub strip_tabs: bool,
    /// `3<<EOF`: the file descriptor it is meant for, when given.
    pub fd: Option<u32>,
}

impl Heredoc {
    /// The body, with leading tabs stripped for `<<-`.
    pub fn text(&self) -> Cow<'_, str> {
        if !self.strip_tabs {
            return Cow::Borrowed(&self.body);
        }
        Cow::Owned(
            self.body
                .split_inclusive('\n')
                .map(|line| line.trim_start_matches('\t'))
                .collect(),
        )
    }
}

/// One `KEY=VALUE` of ENV or LABEL, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value (quotes and `$VARS` as written).
    pub value: String,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default, as written (`ARG V=default`); `None` for a bare `ARG V`.
    pub default: Option<String>,
}

/// COPY and ADD. ADD's own flag (`checksum`) is always `None` for COPY and COPY's (`from`)
/// always `None` for ADD: the parser refuses them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// The sources in order: paths (globs, URLs for ADD) and inline heredoc files.
    pub sources: Vec<Source>,
    /// The destination; a trailing `/` means a directory.
    pub dest: String,
    /// `COPY --from=`: a stage name, a stage index or an image reference.
    pub from: Option<String>,
    /// `--chown=USER[:GROUP]`.
    pub chown: Option<String>,
    /// `--chmod=MODE`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// Each `--exclude=PATTERN`, with `.dockerignore` syntax.
    pub excludes: Vec<String>,
    /// `ADD --checksum=sha256:…`.
    pub checksum: Option<String>,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    /// A path in the context (or stage, or image), a glob, or for ADD a URL.
    Path(String),
    /// An inline file from a heredoc, named after its delimiter.
    Heredoc(Heredoc),
}

/// `ONBUILD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// The trigger as docker stores it in the image config's `OnBuild` (the instruction's
    /// text without `ONBUILD`, heredoc bodies appended): [`super::parse_trigger`] reads it
    /// back when the image is used as a base.
    pub trigger: String,
    /// The trigger, parsed.
    pub instruction: Box<Instruction>,
}
