//! One instruction line (and its heredocs) to a typed [`Command`], with each instruction's
//! argument rules and flags as docker has them.

use std::collections::BTreeMap;

use super::ast::{
    ArgDecl, Command, CommandLine, Copy, From, Healthcheck, Heredoc, Instruction, KeyValue,
    Location, NetworkMode, Onbuild, SecurityMode, Source,
};
use super::error::ParseErrorKind;
use super::syntax::{self, Json, Split};

type Result<T> = std::result::Result<T, ParseErrorKind>;

/// The instructions that may carry heredocs.
pub(crate) fn takes_heredocs(keyword: &str) -> bool {
    ["RUN", "COPY", "ADD"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(keyword))
}

/// Builds the command of one instruction line. `heredocs` are the bodies read after the line.
pub(crate) fn command(split: &Split<'_>, heredocs: Vec<Heredoc>, escape: char) -> Result<Command> {
    let keyword = split.keyword.to_ascii_uppercase();
    let args = split.args;
    let flags = |accepted: &[Flag]| Flags::parse(&keyword, &split.flags, accepted);
    Ok(match keyword.as_str() {
        "FROM" => {
            let mut f = flags(&[Flag::string("platform")])?;
            from(args, f.take_string("platform"))?
        }
        "RUN" => {
            let mut f = flags(&[
                Flag::strings("mount"),
                Flag::string("network"),
                Flag::string("security"),
                Flag::unsupported("device"),
            ])?;
            let command = shell_or_exec("RUN", args)?;
            let heredocs = match command {
                CommandLine::Shell(_) => heredocs,
                CommandLine::Exec(_) => Vec::new(),
            };
            Command::Run(super::ast::Run {
                command,
                heredocs,
                mounts: f.take_strings("mount"),
                network: f
                    .take_string("network")
                    .as_deref()
                    .map(network)
                    .transpose()?,
                security: f
                    .take_string("security")
                    .as_deref()
                    .map(security)
                    .transpose()?,
            })
        }
        "CMD" => {
            flags(&[])?;
            Command::Cmd(shell_or_exec("CMD", args)?)
        }
        "ENTRYPOINT" => {
            flags(&[])?;
            Command::Entrypoint(shell_or_exec("ENTRYPOINT", args)?)
        }
        "SHELL" => {
            flags(&[])?;
            match syntax::json_array(args)? {
                Json::Strings(argv) if argv.is_empty() => {
                    return Err(ParseErrorKind::invalid(
                        "SHELL requires at least one argument",
                    ));
                }
                Json::Strings(argv) => Command::Shell(argv),
                Json::NotJson => {
                    return Err(ParseErrorKind::invalid(
                        "SHELL requires the arguments in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]",
                    ));
                }
            }
        }
        "ENV" => {
            flags(&[])?;
            Command::Env(key_values("ENV", args, escape)?)
        }
        "LABEL" => {
            flags(&[])?;
            Command::Label(key_values("LABEL", args, escape)?)
        }
        "ARG" => {
            flags(&[])?;
            Command::Arg(arg_decls(args, escape)?)
        }
        "EXPOSE" => {
            flags(&[])?;
            Command::Expose(at_least_one("EXPOSE", syntax::blank_separated(args))?)
        }
        "VOLUME" => {
            flags(&[])?;
            let volumes = at_least_one("VOLUME", json_or_blank_separated(args)?)?;
            if volumes.iter().any(|v| v.trim().is_empty()) {
                return Err(ParseErrorKind::invalid(
                    "VOLUME paths can not be empty strings",
                ));
            }
            Command::Volume(volumes.into_iter().map(|v| v.trim().to_owned()).collect())
        }
        "USER" => {
            flags(&[])?;
            Command::User(exactly_one("USER", args)?)
        }
        "WORKDIR" => {
            flags(&[])?;
            Command::Workdir(exactly_one("WORKDIR", args)?)
        }
        "STOPSIGNAL" => {
            flags(&[])?;
            Command::StopSignal(exactly_one("STOPSIGNAL", args)?)
        }
        "MAINTAINER" => {
            flags(&[])?;
            Command::Maintainer(exactly_one("MAINTAINER", args)?)
        }
        "COPY" => {
            let mut f = flags(&[
                Flag::string("from"),
                Flag::string("chown"),
                Flag::string("chmod"),
                Flag::bool("link"),
                Flag::strings("exclude"),
                Flag::unsupported("parents"),
            ])?;
            let mut copy = copy("COPY", args, heredocs, &mut f)?;
            copy.from = f.take_string("from");
            Command::Copy(copy)
        }
        "ADD" => {
            let mut f = flags(&[
                Flag::string("checksum"),
                Flag::string("chown"),
                Flag::string("chmod"),
                Flag::bool("link"),
                Flag::strings("exclude"),
                Flag::unsupported("keep-git-dir"),
                Flag::unsupported("unpack"),
            ])?;
            let mut add = copy("ADD", args, heredocs, &mut f)?;
            add.checksum = f.take_string("checksum");
            Command::Add(add)
        }
        "HEALTHCHECK" => healthcheck(args, &split.flags)?,
        // ONBUILD is handled by the caller: its argument is a whole instruction.
        _ => return Err(ParseErrorKind::UnknownInstruction(split.keyword.to_owned())),
    })
}

/// ONBUILD: the instruction it wraps (`inner`, split from ONBUILD's arguments), which gets
/// the line's heredocs. `original` is the whole ONBUILD line.
pub(crate) fn onbuild(
    split: &Split<'_>,
    inner: &Split<'_>,
    heredocs: Vec<Heredoc>,
    original: &str,
    location: Location,
    escape: char,
) -> Result<Command> {
    Flags::parse("ONBUILD", &split.flags, &[])?;
    let keyword = inner.keyword.to_ascii_uppercase();
    match keyword.as_str() {
        "" => {
            return Err(ParseErrorKind::invalid(
                "ONBUILD requires an instruction to run later",
            ));
        }
        "ONBUILD" => {
            return Err(ParseErrorKind::invalid(
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
        }
        "FROM" | "MAINTAINER" => {
            return Err(ParseErrorKind::invalid(format!(
                "{keyword} isn't allowed as an ONBUILD trigger"
            )));
        }
        _ => {}
    }
    // The trigger as docker stores it: the line without ONBUILD, heredocs appended.
    let mut trigger = original.trim_start();
    trigger = trigger[split.keyword.len()..].trim_start();
    let mut trigger = trigger.to_owned();
    for doc in &heredocs {
        trigger.push('\n');
        trigger.push_str(&doc.body);
        trigger.push_str(&doc.name);
    }
    let command = command(inner, heredocs, escape)?;
    Ok(Command::Onbuild(Onbuild {
        trigger,
        instruction: Box::new(Instruction {
            location,
            original: split.args.to_owned(),
            command,
        }),
    }))
}

fn from(args: &str, platform: Option<String>) -> Result<Command> {
    let words = syntax::blank_separated(args);
    let (image, stage_name) = match words.as_slice() {
        [image] => (image.clone(), None),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            if !valid_stage_name(&name) {
                return Err(ParseErrorKind::invalid(format!(
                    "invalid stage name {name:?}: a stage name starts with a letter and has only letters, digits, '-', '_' and '.'"
                )));
            }
            (image.clone(), Some(name))
        }
        _ => {
            return Err(ParseErrorKind::invalid(
                "FROM takes an image and optionally AS and a stage name: FROM IMAGE [AS NAME]",
            ));
        }
    };
    Ok(Command::From(From {
        image,
        stage_name,
        platform,
    }))
}

/// docker's stage names: `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn network(value: &str) -> Result<NetworkMode> {
    match value {
        "default" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        _ => Err(ParseErrorKind::invalid(format!(
            "invalid RUN --network={value:?}: it is one of default, none, host"
        ))),
    }
}

fn security(value: &str) -> Result<SecurityMode> {
    match value {
        "sandbox" => Ok(SecurityMode::Sandbox),
        "insecure" => Ok(SecurityMode::Insecure),
        _ => Err(ParseErrorKind::invalid(format!(
            "invalid RUN --security={value:?}: it is sandbox or insecure"
        ))),
    }
}

/// The shell or exec form of RUN, CMD and ENTRYPOINT. An empty shell form is an error;
/// `CMD []` is not (it clears the command).
fn shell_or_exec(keyword: &str, args: &str) -> Result<CommandLine> {
    match syntax::json_array(args)? {
        Json::Strings(argv) => Ok(CommandLine::Exec(argv)),
        Json::NotJson if args.is_empty() => Err(ParseErrorKind::invalid(format!(
            "{keyword} requires a command (or, in exec form, a JSON array such as {keyword} [\"echo\", \"hi\"])"
        ))),
        Json::NotJson => Ok(CommandLine::Shell(args.to_owned())),
    }
}

fn json_or_blank_separated(args: &str) -> Result<Vec<String>> {
    Ok(match syntax::json_array(args)? {
        Json::Strings(list) => list,
        Json::NotJson => syntax::blank_separated(args),
    })
}

fn at_least_one(keyword: &str, list: Vec<String>) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(ParseErrorKind::invalid(format!(
            "{keyword} requires at least one argument"
        )));
    }
    Ok(list)
}

fn exactly_one(keyword: &str, args: &str) -> Result<String> {
    if args.is_empty() {
        return Err(ParseErrorKind::invalid(format!(
            "{keyword} requires exactly one argument"
        )));
    }
    Ok(args.to_owned())
}

/// ENV and LABEL: `K=V …` (quotes kept, for the expansion to remove) or the old `K V` form,
/// whose value is the rest of the line.
fn key_values(keyword: &str, args: &str, escape: char) -> Result<Vec<KeyValue>> {
    let words = syntax::words(args, escape);
    let Some(first) = words.first() else {
        return Err(ParseErrorKind::invalid(format!(
            "{keyword} requires at least one argument"
        )));
    };
    if !first.contains('=') {
        let Some((key, value)) = syntax::split_once_blank(args) else {
            return Err(ParseErrorKind::invalid(format!(
                "{keyword} must have two arguments: {keyword} {first} VALUE (or {keyword} {first}=VALUE)"
            )));
        };
        return Ok(vec![KeyValue {
            key: key.to_owned(),
            value: value.to_owned(),
        }]);
    }
    words
        .iter()
        .map(|word| {
            let Some((key, value)) = word.split_once('=') else {
                return Err(ParseErrorKind::invalid(format!(
                    "syntax error: can't find = in {word:?}; {keyword} takes name=value pairs"
                )));
            };
            if key.is_empty() {
                return Err(ParseErrorKind::invalid(format!(
                    "{keyword} names can not be blank"
                )));
            }
            Ok(KeyValue {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        })
        .collect()
}

fn arg_decls(args: &str, escape: char) -> Result<Vec<ArgDecl>> {
    let words = at_least_one("ARG", syntax::words(args, escape))?;
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(ParseErrorKind::invalid("ARG names can not be blank")),
            Some((name, default)) => Ok(ArgDecl {
                name: name.to_owned(),
                default: Some(default.to_owned()),
            }),
            None => Ok(ArgDecl {
                name: word,
                default: None,
            }),
        })
        .collect()
}

fn copy(keyword: &str, args: &str, heredocs: Vec<Heredoc>, flags: &mut Flags) -> Result<Copy> {
    let mut list = json_or_blank_separated(args)?;
    if list.len() < 2 {
        return Err(ParseErrorKind::invalid(format!(
            "{keyword} requires at least two arguments: the source(s) and the destination"
        )));
    }
    let dest = list.pop().unwrap_or_default();
    if syntax::heredoc_marker(&dest)?.is_some() {
        return Err(ParseErrorKind::invalid(format!(
            "{keyword} cannot accept a heredoc as a destination"
        )));
    }
    let mut by_name: BTreeMap<String, Heredoc> =
        heredocs.into_iter().map(|d| (d.name.clone(), d)).collect();
    let mut sources = Vec::with_capacity(list.len());
    for src in list {
        match syntax::heredoc_marker(&src)? {
            Some(marker) => {
                let doc = by_name.remove(&marker.name).ok_or_else(|| {
                    ParseErrorKind::invalid(format!(
                        "{keyword}: the heredoc {src} has no body (or is named twice)"
                    ))
                })?;
                sources.push(Source::Heredoc(doc));
            }
            None => sources.push(Source::Path(src)),
        }
    }
    Ok(Copy {
        sources,
        dest,
        from: None,
        chown: flags.take_string("chown"),
        chmod: flags.take_string("chmod"),
        link: flags.take_bool("link").unwrap_or(false),
        excludes: flags.take_strings("exclude"),
        checksum: None,
    })
}

fn healthcheck(args: &str, raw_flags: &[String]) -> Result<Command> {
    let (kind, rest) = match args.find(char::is_whitespace) {
        Some(i) => (&args[..i], args[i..].trim_start()),
        None => (args, ""),
    };
    if kind.is_empty() {
        return Err(ParseErrorKind::invalid(
            "HEALTHCHECK requires at least one argument: NONE, or CMD and a command",
        ));
    }
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        Flags::parse("HEALTHCHECK NONE", raw_flags, &[])?;
        if !rest.is_empty() {
            return Err(ParseErrorKind::invalid(
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        return Ok(Command::Healthcheck(Healthcheck {
            test: vec!["NONE".to_owned()],
            ..Healthcheck::default()
        }));
    }
    let mut f = Flags::parse(
        "HEALTHCHECK",
        raw_flags,
        &[
            Flag::string("interval"),
            Flag::string("timeout"),
            Flag::string("start-period"),
            Flag::string("start-interval"),
            Flag::string("retries"),
        ],
    )?;
    if kind != "CMD" {
        return Err(ParseErrorKind::invalid(format!(
            "unknown type {kind:?} in HEALTHCHECK (try CMD)"
        )));
    }
    let test = match syntax::json_array(rest)? {
        Json::Strings(argv) if argv.is_empty() => None,
        Json::Strings(argv) => Some([vec!["CMD".to_owned()], argv].concat()),
        Json::NotJson if rest.is_empty() => None,
        Json::NotJson => Some(vec!["CMD-SHELL".to_owned(), rest.to_owned()]),
    };
    let test =
        test.ok_or_else(|| ParseErrorKind::invalid("missing command after HEALTHCHECK CMD"))?;
    let mut interval = |name| -> Result<i64> {
        match f.take_string(name) {
            None => Ok(0),
            Some(value) => {
                let ns = go_duration(&value).ok_or_else(|| {
                    ParseErrorKind::invalid(format!(
                        "HEALTHCHECK --{name}={value:?} is not a duration (such as 30s, 1m30s, 500ms)"
                    ))
                })?;
                if ns != 0 && ns < 1_000_000 {
                    return Err(ParseErrorKind::invalid(format!(
                        "HEALTHCHECK --{name} cannot be less than 1ms"
                    )));
                }
                Ok(ns)
            }
        }
    };
    let health = Healthcheck {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries: match f.take_string("retries") {
            None => 0,
            Some(value) => match value.parse::<i32>() {
                Ok(n) if n >= 0 => i64::from(n),
                _ => {
                    return Err(ParseErrorKind::invalid(format!(
                        "HEALTHCHECK --retries={value:?} is not a number of retries (0 or more)"
                    )));
                }
            },
        },
    };
    Ok(Command::Healthcheck(health))
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`, `-1s`) in nanoseconds, as `time.ParseDuration`
/// reads it. `None` when it does not parse or does not fit.
pub(crate) fn go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number.parse::<f64>().ok()? * scale;
    }
    let total = total.round();
    if total > i64::MAX as f64 {
        return None;
    }
    Some(if negative {
        -(total as i64)
    } else {
        total as i64
    })
}

/// One flag an instruction takes.
#[derive(Debug, Clone, Copy)]
struct Flag {
    name: &'static str,
    kind: FlagKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name` or `--name=true|false`.
    Bool,
    /// `--name=value`, once.
    String,
    /// `--name=value`, repeatable.
    Strings,
    /// A docker flag strata refuses with a clear message.
    Unsupported,
}

impl Flag {
    fn bool(name: &'static str) -> Flag {
        Flag {
            name,
            kind: FlagKind::Bool,
        }
    }
    fn string(name: &'static str) -> Flag {
        Flag {
            name,
            kind: FlagKind::String,
        }
    }
    fn strings(name: &'static str) -> Flag {
        Flag {
            name,
            kind: FlagKind::Strings,
        }
    }
    fn unsupported(name: &'static str) -> Flag {
        Flag {
            name,
            kind: FlagKind::Unsupported,
        }
    }
}

/// An instruction's flags, checked against what it takes.
#[derive(Debug, Default)]
struct Flags {
    strings: BTreeMap<&'static str, Vec<String>>,
    bools: BTreeMap<&'static str, bool>,
}

impl Flags {
    fn parse(instruction: &str, raw: &[String], accepted: &[Flag]) -> Result<Flags> {
        let mut flags = Flags::default();
        for arg in raw {
            let body = arg.strip_prefix("--").unwrap_or(arg);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(flag) = accepted.iter().find(|f| f.name == name) else {
                let known: Vec<String> = accepted
                    .iter()
                    .filter(|f| f.kind != FlagKind::Unsupported)
                    .map(|f| format!("--{}", f.name))
                    .collect();
                return Err(ParseErrorKind::UnknownFlag {
                    flag: name.to_owned(),
                    instruction: instruction.to_owned(),
                    accepted: if known.is_empty() {
                        "no flags".to_owned()
                    } else {
                        known.join(", ")
                    },
                });
            };
            let seen = flags.strings.contains_key(flag.name) || flags.bools.contains_key(flag.name);
            if seen && flag.kind != FlagKind::Strings {
                return Err(ParseErrorKind::invalid(format!(
                    "duplicate flag specified: --{name}"
                )));
            }
            match flag.kind {
                FlagKind::Unsupported => {
                    return Err(ParseErrorKind::UnsupportedFlag {
                        flag: flag.name,
                        instruction: instruction.to_owned(),
                    });
                }
                FlagKind::Bool => {
                    let on = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some("") => {
                            return Err(ParseErrorKind::invalid(format!(
                                "missing a value on flag --{name}"
                            )));
                        }
                        Some(_) => {
                            return Err(ParseErrorKind::invalid(format!(
                                "expecting boolean value for flag --{name}, not: {}",
                                value.unwrap_or_default()
                            )));
                        }
                    };
                    flags.bools.insert(flag.name, on);
                }
                FlagKind::String | FlagKind::Strings => {
                    let Some(value) = value else {
                        return Err(ParseErrorKind::invalid(format!(
                            "missing a value on flag --{name} (write --{name}=VALUE)"
                        )));
                    };
                    flags
                        .strings
                        .entry(flag.name)
                        .or_default()
                        .push(value.to_owned());
                }
            }
        }
        Ok(flags)
    }

    fn take_string(&mut self, name: &str) -> Option<String> {
        self.strings.remove(name).and_then(|mut v| v.pop())
    }

    fn take_strings(&mut self, name: &str) -> Vec<String> {
        self.strings.remove(name).unwrap_or_default()
    }

    fn take_bool(&mut self, name: &str) -> Option<bool> {
        self.bools.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, ns) in [
            ("0", Some(0)),
            ("5s", Some(5_000_000_000)),
            ("1m30s", Some(90_000_000_000)),
            ("1.5h", Some(5_400_000_000_000)),
            ("300ms", Some(300_000_000)),
            ("2h45m", Some(9_900_000_000_000)),
            ("10us", Some(10_000)),
            ("10µs", Some(10_000)),
            ("50ns", Some(50)),
            ("-1s", Some(-1_000_000_000)),
            (".5s", Some(500_000_000)),
            ("0ms", Some(0)),
            ("", None),
            ("5", None),
            ("s", None),
            ("5x", None),
            ("1..2s", None),
            ("9999999999h", None),
        ] {
            assert_eq!(go_duration(text), ns, "{text:?}");
        }
    }

    #[test]
    fn stage_names() {
        for ok in ["build", "a", "b-1_x.y"] {
            assert!(valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1st", "-x", "a b", "a/b", "Ab"] {
            assert!(!valid_stage_name(bad), "{bad}");
        }
    }
}
