//! Variable expansion per instruction, where docker does it and only there.

use super::ast::{Command, Copy, From, KeyValue, Run, Source};
use crate::shell_words::{ExpandError, Lexer, Variables};

impl Command {
    /// The command with its variables expanded as docker does, in the fields docker expands:
    ///
    /// | instruction | expanded |
    /// |---|---|
    /// | FROM | the image and `--platform` (give it the global ARGs: [`crate::plan`] does) |
    /// | ENV, LABEL | keys and values |
    /// | EXPOSE | each port, split into words (`EXPOSE $PORTS` may give several) |
    /// | VOLUME, USER, WORKDIR, STOPSIGNAL | the values |
    /// | COPY, ADD | sources, destination, `--chown`, `--chmod`, `--checksum`, and the bodies of heredocs whose delimiter is not quoted (`$` and `\` only; after expansion [`super::Heredoc::expand`] is false and tabs are already stripped) |
    /// | RUN | `--mount` values only |
    ///
    /// RUN, CMD, ENTRYPOINT and HEALTHCHECK commands, SHELL, MAINTAINER and ONBUILD are never
    /// expanded (the shell does it at run time); `COPY --from` and `--exclude` are not either.
    /// ARG is left as written: a default is expanded only when no build argument overrides it
    /// ([`crate::plan::resolve_arg`]).
    ///
    /// `lexer` is the Dockerfile's ([`super::Dockerfile::lexer`]); `vars` the step's scope.
    pub fn expand(&self, lexer: &Lexer, vars: &dyn Variables) -> Result<Command, ExpandError> {
        let word = |w: &String| lexer.expand_word(w, vars);
        let opt = |w: &Option<String>| w.as_ref().map(word).transpose();
        let all = |ws: &[String]| ws.iter().map(word).collect::<Result<Vec<_>, _>>();
        let pairs = |kvs: &[KeyValue]| {
            kvs.iter()
                .map(|kv| {
                    Ok(KeyValue {
                        key: word(&kv.key)?,
                        value: word(&kv.value)?,
                    })
                })
                .collect::<Result<Vec<_>, ExpandError>>()
        };
        let copy = |c: &Copy| -> Result<Copy, ExpandError> {
            let sources = c
                .sources
                .iter()
                .map(|s| match s {
                    Source::Path(p) => word(p).map(Source::Path),
                    Source::Heredoc(doc) if doc.expand => {
                        let mut doc = doc.clone();
                        doc.body = Lexer::heredoc().expand_word(&doc.text(), vars)?;
                        doc.expand = false;
                        doc.strip_tabs = false;
                        Ok(Source::Heredoc(doc))
                    }
                    Source::Heredoc(doc) => Ok(Source::Heredoc(doc.clone())),
                })
                .collect::<Result<_, ExpandError>>()?;
            Ok(Copy {
                sources,
                dest: word(&c.dest)?,
                chown: opt(&c.chown)?,
                chmod: opt(&c.chmod)?,
                checksum: opt(&c.checksum)?,
                ..c.clone()
            })
        };
        Ok(match self {
            Command::From(f) => Command::From(From {
                image: word(&f.image)?,
                platform: opt(&f.platform)?,
                stage_name: f.stage_name.clone(),
            }),
            Command::Run(r) => Command::Run(Run {
                mounts: all(&r.mounts)?,
                ..r.clone()
            }),
            Command::Env(kvs) => Command::Env(pairs(kvs)?),
            Command::Label(kvs) => Command::Label(pairs(kvs)?),
            Command::Expose(ports) => {
                let mut out = Vec::with_capacity(ports.len());
                for p in ports {
                    out.extend(lexer.expand_words(p, vars)?);
                }
                Command::Expose(out)
            }
            Command::Volume(v) => Command::Volume(all(v)?),
            Command::User(u) => Command::User(word(u)?),
            Command::Workdir(w) => Command::Workdir(word(w)?),
            Command::StopSignal(s) => Command::StopSignal(word(s)?),
            Command::Copy(c) => Command::Copy(copy(c)?),
            Command::Add(c) => Command::Add(copy(c)?),
            Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Arg(_)
            | Command::Shell(_)
            | Command::Healthcheck(_)
            | Command::Onbuild(_)
            | Command::Maintainer(_) => self.clone(),
        })
    }
}
