//! Variable substitution and word splitting as docker does it in Dockerfile instructions: the
//! rules of BuildKit's shell lexer (`frontend/dockerfile/shell`), which follow `sh` without
//! running anything.
//!
//! - `$v`, `${v}`; `${v:-w}` / `${v-w}` (w when v is unset or empty / unset), `${v:+w}` /
//!   `${v+w}` (w when v is set and non-empty / set), `${v:?msg}` / `${v?msg}` (an error with
//!   msg when v is unset or empty / unset); `${v#pat}`, `${v##pat}`, `${v%pat}`, `${v%%pat}`
//!   (shortest/longest prefix/suffix removed) and `${v/pat/rep}`, `${v//pat/rep}` (first/every
//!   match replaced), with `*` and `?` wildcards. Positional and special parameters (`$1`,
//!   `$@`, `$?`…) are never set.
//! - `'...'` is literal; `"..."` expands `$` and lets the escape character escape `"`, `$` and
//!   itself only; outside quotes the escape character (`\`, or `` ` `` after `# escape=`)
//!   makes the next character literal. Quotes and escapes are removed from the result.
//! - [`Lexer::expand_words`] also splits the result into words at unquoted whitespace (after
//!   expansion, as `EXPOSE $PORTS` needs); [`Lexer::expand_word`] keeps one string.
//!
//! Which instructions are expanded, and which fields of them, is
//! [`crate::dockerfile::Command::expand`]'s business; the variables in scope (ARG and ENV, ENV
//! winning) are the executor's, handed in as a [`Variables`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use crate::glob::{Glob, GlobError};

/// The variables in scope for an expansion.
pub trait Variables {
    /// The value of `name`, or `None` when it is unset (set but empty is `Some("")`).
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl<S: BuildHasher> Variables for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        HashMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

impl Variables for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

impl<F: Fn(&str) -> Option<String>> Variables for F {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self(name).map(Cow::Owned)
    }
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVariables;

impl Variables for NoVariables {
    fn get(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (in {:?})", shorten(word))]
pub struct ExpandError {
    /// The word as written.
    pub word: String,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// What went wrong in an expansion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// A quote that is never closed.
    #[error("unexpected end of text while looking for the matching {0} quote")]
    UnclosedQuote(&'static str),
    /// A `${` without its `}`, or a `${v/pat/rep}` without its second `/`.
    #[error("syntax error: missing '{0}'")]
    Missing(char),
    /// `${}`, `${:…}`, `${{…}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${v=w}`, `${v:#w}` and other forms docker does not have.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` / `${v:?msg}` with `v` unset (or empty).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message written after `?`, or docker's default one.
        message: String,
    },
    /// `${…}` inside `${…}` deeper than anyone writes (a hostile Dockerfile).
    #[error("substitutions nested more than {MAX_NESTING} deep")]
    TooDeep,
    /// A `#`, `%` or `/` pattern that does not parse.
    #[error(transparent)]
    Pattern(#[from] GlobError),
}

/// `text` cut to its first 100 characters (and `…`), for error messages.
pub(crate) fn shorten(text: &str) -> Cow<'_, str> {
    const MAX: usize = 100;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

/// How deep `${a:-${b:-…}}` may nest: the lexer recurses, and a Dockerfile is untrusted.
const MAX_NESTING: usize = 64;

/// How quotes are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quotes {
    /// Processed and removed (the normal case).
    Remove,
    /// Processed, and kept in the result.
    Keep,
    /// Ordinary characters (heredoc bodies).
    Ignore,
}

/// A configured lexer. [`Lexer::new`] is the one instructions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    quotes: Quotes,
    raw_escapes: bool,
    keep_unset: bool,
    heredoc_markers: bool,
}

impl Lexer {
    /// The lexer of a Dockerfile whose escape character is `escape` (`\` unless a
    /// `# escape=` directive says otherwise: see [`crate::dockerfile::Dockerfile::escape`]).
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            quotes: Quotes::Remove,
            raw_escapes: false,
            keep_unset: false,
            heredoc_markers: false,
        }
    }

    /// The lexer for the body of a `COPY <<EOF` heredoc whose delimiter is not quoted: `$`
    /// expansions and `\` escapes only; quotes are ordinary characters.
    pub fn heredoc() -> Lexer {
        Lexer {
            quotes: Quotes::Ignore,
            ..Lexer::new('\\')
        }
    }

    /// The lexer that finds heredoc markers (`<<EOF`, `<< EOF`) in an instruction line:
    /// quotes and escapes kept, unset variables left as written.
    pub(crate) fn heredoc_markers() -> Lexer {
        Lexer {
            quotes: Quotes::Keep,
            raw_escapes: true,
            keep_unset: true,
            heredoc_markers: true,
            ..Lexer::new('\\')
        }
    }

    /// The lexer that reads a heredoc delimiter word; `keep_quotes` tells whether quotes stay
    /// in the result (comparing both tells whether the delimiter was quoted).
    pub(crate) fn heredoc_delimiter(keep_quotes: bool) -> Lexer {
        Lexer {
            quotes: if keep_quotes {
                Quotes::Keep
            } else {
                Quotes::Remove
            },
            keep_unset: true,
            ..Lexer::new('\\')
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` into one string (whitespace kept as it is).
    pub fn expand_word(&self, word: &str, vars: &dyn Variables) -> Result<String, ExpandError> {
        self.run(word, vars).map(|(text, _)| text)
    }

    /// Expands `word` and splits the result into words at whitespace that was neither quoted
    /// nor escaped (whitespace coming from a variable's value splits too, as in `sh`).
    pub fn expand_words(
        &self,
        word: &str,
        vars: &dyn Variables,
    ) -> Result<Vec<String>, ExpandError> {
        self.run(word, vars).map(|(_, words)| words)
    }

    fn run(&self, word: &str, vars: &dyn Variables) -> Result<(String, Vec<String>), ExpandError> {
        let mut scan = Scan {
            lexer: *self,
            text: word,
            pos: 0,
            vars,
            depth: 0,
        };
        scan.until(None, self.raw_escapes)
            .map_err(|kind| ExpandError {
                word: word.to_owned(),
                kind,
            })
    }
}

/// The words of a result as they are built.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// An unquoted character: whitespace ends the word.
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.push_literal(c);
        }
    }

    /// A quoted or escaped character: part of the word whatever it is.
    fn push_literal(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    fn push_literal_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

type Step<T> = Result<T, ExpandErrorKind>;

struct Scan<'a> {
    lexer: Lexer,
    text: &'a str,
    pos: usize,
    vars: &'a dyn Variables,
    /// How many `${…}` words are open.
    depth: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn keep_quotes(&self) -> bool {
        self.lexer.quotes == Quotes::Keep
    }

    /// Reads up to `stop` (consumed) or the end when `stop` is `None`.
    fn until(&mut self, stop: Option<char>, raw_escapes: bool) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = self.lexer.quotes != Quotes::Ignore;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    words.push_str(&value);
                    result.push_str(&value);
                }
                '\'' if quotes => {
                    let quoted = self.single_quoted()?;
                    words.push_literal_str(&quoted);
                    result.push_str(&quoted);
                }
                '"' if quotes => {
                    let quoted = self.double_quoted()?;
                    words.push_literal_str(&quoted);
                    result.push_str(&quoted);
                }
                '<' if self.lexer.heredoc_markers => {
                    let marker = self.heredoc_marker();
                    words.push_literal_str(&marker);
                    result.push_str(&marker);
                }
                _ => {
                    self.next();
                    if c == self.lexer.escape {
                        if raw_escapes {
                            words.push_literal(c);
                            result.push(c);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.push_literal(escaped);
                        result.push(escaped);
                    } else {
                        words.push(c);
                        result.push(c);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(ExpandErrorKind::Missing(stop)),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        self.next();
        if self.keep_quotes() {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnclosedQuote("single")),
                Some('\'') => {
                    if self.keep_quotes() {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        self.next();
        if self.keep_quotes() {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnclosedQuote("double")),
                Some('"') => {
                    self.next();
                    if self.keep_quotes() {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.lexer.escape {
                        // Only `"`, `$` and the escape itself can be escaped here; before
                        // anything else the escape character stays.
                        match self.peek() {
                            Some(e) if e == '"' || e == '$' || e == self.lexer.escape => {
                                if self.lexer.raw_escapes {
                                    out.push(c);
                                }
                                self.next();
                                out.push(e);
                            }
                            Some(_) => out.push(c),
                            None => {}
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// `<<` and the blanks after it, kept together so that `<< EOF` reads as one word.
    fn heredoc_marker(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        let mut marker = "<<".to_owned();
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            marker.push(c);
            self.next();
        }
        marker
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(Cow::into_owned)
    }

    /// A `$…` expansion; the scanner is on the `$`.
    fn dollar(&mut self) -> Step<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.keep_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ExpandErrorKind::Missing('}')),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let Some(op) = self.next() else {
            return Err(ExpandErrorKind::Missing('}'));
        };
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.keep_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            '/' => self.replace(&name),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = op == ':';
                let modifier = if null_is_unset {
                    self.next().ok_or(ExpandErrorKind::Missing('}'))?
                } else {
                    op
                };
                let spelled = if null_is_unset {
                    format!(":{modifier}")
                } else {
                    modifier.to_string()
                };
                let pattern_op = matches!(modifier, '#' | '%');
                if null_is_unset && pattern_op {
                    return Err(ExpandErrorKind::UnsupportedModifier(spelled));
                }
                let word = self.word_until('}', pattern_op)?;
                let value = self.lookup(&name);
                if value.is_none() && self.lexer.keep_unset {
                    return Ok(format!("${{{name}{spelled}{word}}}"));
                }
                let empty = value.as_deref().is_none_or(str::is_empty);
                let absent = value.is_none() || (null_is_unset && empty);
                match modifier {
                    '-' => Ok(if absent {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if absent { String::new() } else { word }),
                    '?' => match value {
                        Some(v) if !absent => Ok(v),
                        _ => {
                            let message = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                "is not allowed to be empty".to_owned()
                            };
                            Err(ExpandErrorKind::Required { name, message })
                        }
                    },
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (longest, pattern) = match word.strip_prefix(modifier) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let glob = Glob::shell(pattern)?;
                        Ok(if modifier == '#' {
                            match glob.match_prefix(&value, longest) {
                                Some(end) => value[end..].to_owned(),
                                None => value,
                            }
                        } else {
                            match glob.match_suffix(&value, longest) {
                                Some(start) => value[..start].to_owned(),
                                None => value,
                            }
                        })
                    }
                    _ => Err(ExpandErrorKind::UnsupportedModifier(spelled)),
                }
            }
            other => Err(ExpandErrorKind::UnsupportedModifier(other.to_string())),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`; the scanner is past
    /// the first `/`.
    fn replace(&mut self, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = self.word_until('/', true)?;
        let replacement = self.word_until('}', true)?;
        let Some(value) = self.lookup(name) else {
            if self.lexer.keep_unset {
                let slashes = if all { "//" } else { "/" };
                return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        Ok(Glob::shell(&pattern)?.replace(&value, &replacement, all))
    }

    /// The word inside `${…}` up to `stop`; running off the end means the `stop` is missing.
    fn word_until(&mut self, stop: char, raw_escapes: bool) -> Step<String> {
        if self.depth >= MAX_NESTING {
            return Err(ExpandErrorKind::TooDeep);
        }
        self.depth += 1;
        let word = self.until(Some(stop), raw_escapes);
        self.depth -= 1;
        match word {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(ExpandErrorKind::Missing(stop)),
            Err(e) => Err(e),
        }
    }

    /// A variable name: letters, digits and `_`; or all the digits of a positional parameter;
    /// or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Our own cases after BuildKit's `envVarTest` table: (input, expected; None = an error).
    #[test]
    fn substitution_table() {
        let env = vars(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", Some("hello")),
            ("he'll'o", Some("hello")),
            ("he'llo", None),
            ("he\\'llo", Some("he'llo")),
            ("he\\\\'llo", None),
            ("abc\\tdef", Some("abctdef")),
            ("\"abc\\tdef\"", Some("abc\\tdef")),
            ("\"abc\\\\tdef\"", Some("abc\\tdef")),
            ("'abc\\tdef'", Some("abc\\tdef")),
            ("hello\\", Some("hello")),
            ("hello\\\\", Some("hello\\")),
            ("\"hello", None),
            ("\"hello\\\"", None),
            ("\"hel'lo\"", Some("hel'lo")),
            ("'hello", None),
            ("'hello\\'", Some("hello\\")),
            ("'hello\\there'", Some("hello\\there")),
            ("\"''\"", Some("''")),
            ("$.", Some("$.")),
            ("he$1x", Some("hex")),
            ("he$.x", Some("he$.x")),
            ("he$pwd.", Some("he.")),
            ("he$PWD", Some("he/home")),
            ("he\\$PWD", Some("he$PWD")),
            ("he\\\\$PWD", Some("he\\/home")),
            ("\"he\\$PWD\"", Some("he$PWD")),
            ("\"he\\\\$PWD\"", Some("he\\/home")),
            ("\\${}", Some("${}")),
            ("\\${}aaa", Some("${}aaa")),
            ("${}", None),
            ("he${}xx", None),
            ("he${hi}xx", Some("hexx")),
            ("he${PWD}", Some("he/home")),
            ("he${.}", None),
            ("he${XXX:-000}xx", Some("he000xx")),
            ("he${PWD:-000}xx", Some("he/homexx")),
            ("he${XXX:-$PWD}xx", Some("he/homexx")),
            ("he${XXX:-${PWD:-yyy}}xx", Some("he/homexx")),
            ("he${XXX:-${YYY:-yyy}}xx", Some("heyyyxx")),
            ("he${XXX:YYY}", None),
            ("he${XXX?}", None),
            ("he${XXX:?}", None),
            ("he${PWD?}", Some("he/home")),
            ("he${PWD:?}", Some("he/home")),
            ("he${NULL?}", Some("he")),
            ("he${NULL:?}", None),
            ("he${XXX:+${PWD}}xx", Some("hexx")),
            ("he${PWD:+${XXX}}xx", Some("hexx")),
            ("he${PWD:+${SHELL}}xx", Some("hebashxx")),
            ("he${XXX:+000}xx", Some("hexx")),
            ("he${PWD:+000}xx", Some("he000xx")),
            ("'he${XX}'", Some("he${XX}")),
            ("\"he${PWD}\"", Some("he/home")),
            ("\"he'$PWD'\"", Some("he'/home'")),
            ("'$PWD'", Some("$PWD")),
            ("'\\$PWD'", Some("\\$PWD")),
            ("'\"hello\"'", Some("\"hello\"")),
            ("he${PWD", None),
            ("he${PWD:=000}xx", None),
            ("he${PWD:+${PWD}:}xx", Some("he/home:xx")),
            ("he${XXX:-\\$PWD:}xx", Some("he$PWD:xx")),
            ("he${XXX:-\\${PWD}z}xx", Some("he${PWDz}xx")),
            ("안'녕'하세요", Some("안녕하세요")),
            ("안녕\\t하세요", Some("안녕t하세요")),
            ("안녕$KOREAN", Some("안녕한국어")),
            ("${{aaa}", None),
            ("${aaa}}", Some("}")),
            ("${aaa", None),
            ("${aaa:-bbb}}", Some("bbb}")),
            ("${aaa:-bbb", None),
            ("${aaa:-${bbb:-ccc}}", Some("ccc")),
            ("${aaa:-bbb ${foo}", None),
            ("${aaa:-bbb {foo}", Some("bbb {foo")),
            ("${:}", None),
            ("${:-bbb}", None),
            ("$1", Some("")),
            ("${1:-bbb}", Some("bbb")),
            ("$999aaa", Some("aaa")),
            ("${001:-bbb}aaa", Some("bbbaaa")),
            ("$@@@", Some("@@")),
            ("${@:-bbb}aaa", Some("bbbaaa")),
            ("$#", Some("")),
            ("${?:+bbb}", Some("")),
            ("$$", Some("")),
            ("${0:-bbb}", Some("bbb")),
        ];
        let lexer = Lexer::new('\\');
        for (input, want) in cases {
            let got = lexer.expand_word(input, &env);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input:?}"),
                None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn unset_versus_empty() {
        let env = vars(&[("FOO", "xxx"), ("BAR", "")]);
        let lexer = Lexer::new('\\');
        let x = |w: &str| lexer.expand_word(w, &env);
        assert_eq!(x("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}").unwrap(), "xxx  ccc");
        assert_eq!(
            x("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}").unwrap(),
            "xxx bbb ccc"
        );
        assert_eq!(x("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}").unwrap(), "aaa bbb ");
        assert_eq!(x("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}").unwrap(), "aaa  ");
        assert_eq!(x("${BAR?bbb}").unwrap(), "");
        assert!(x("${BAZ?ccc}").is_err());
        assert!(x("${BAR:?bbb}").is_err());
        for bad in [
            "${FOO=aaa}",
            "${FOO=:aaa}",
            "${FOO=}",
            "${FOO:#}",
            "${FOO:%%}",
        ] {
            assert!(x(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn required_variables_carry_the_message() {
        let lexer = Lexer::new('\\');
        let unset = vars(&[("ARG", "x")]);
        let empty = vars(&[("VAR", ""), ("ARG", "x")]);
        let set = vars(&[("VAR", "plain")]);
        let word = "${VAR:?message here$ARG}";
        assert_eq!(lexer.expand_word(word, &set).unwrap(), "plain");
        let err = lexer.expand_word(word, &empty).unwrap_err();
        assert_eq!(
            err.kind,
            ExpandErrorKind::Required {
                name: "VAR".into(),
                message: "message herex".into()
            }
        );
        assert!(err.to_string().contains("VAR: message herex"), "{err}");
        assert!(lexer.expand_word(word, &unset).is_err());
        let word = "${VAR?message here$ARG}";
        assert_eq!(lexer.expand_word(word, &empty).unwrap(), "");
        let err = lexer.expand_word(word, &unset).unwrap_err();
        assert!(err.to_string().contains("VAR: message herex"));
        let err = lexer.expand_word("${NOPE:?}", &unset).unwrap_err();
        assert!(
            err.to_string().contains("NOPE: is not allowed to be unset"),
            "{err}"
        );
    }

    #[test]
    fn prefix_suffix_and_replace() {
        let lexer = Lexer::new('\\');
        let x = |w: &str, env: &[(&str, &str)]| lexer.expand_word(w, &vars(env)).unwrap();
        assert_eq!(
            x(
                "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
                &[("FOO", "()[]{}^$.*?|\\x")]
            ),
            "x"
        );
        assert_eq!(x("${FOO%%\\**}", &[("FOO", "xx**")]), "xx");
        assert_eq!(x("${FOO#*x*y}", &[("FOO", "xxyy")]), "y");
        assert_eq!(x("${FOO#*}", &[("FOO", "xxyy")]), "xxyy");
        assert_eq!(x("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")]), "xyy");
        assert_eq!(x("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")]), "xxyy");
        assert_eq!(x("${FOO#}", &[("FOO", "xxyy")]), "xxyy");
        assert_eq!(x("${FOO##*x}", &[("FOO", "xxyy")]), "yy");
        assert_eq!(x("${FOO##}", &[("FOO", "xxyy")]), "xxyy");
        assert_eq!(x("${FOO#?\\?}", &[("FOO", "???y")]), "?y");
        assert_eq!(
            x("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")]),
            ".xxyy."
        );
        assert_eq!(x("${FOO%%\\**\\*}", &[("FOO", "a***yy*")]), "a");
        assert_eq!(x("${FOO%}", &[("FOO", "xxyy")]), "xxyy");
        assert_eq!(x("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")]), "xxyy");
        assert_eq!(x("${V%/*}", &[("V", "linux/arm64")]), "linux");
        assert_eq!(x("${V##*/}", &[("V", "linux/arm64")]), "arm64");
        let slashes = &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")];
        assert_eq!(
            x("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", slashes),
            "/foo.*/*.txt - /foo..*.txt"
        );
        let tmp = &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")];
        assert_eq!(
            x("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", tmp),
            "/tmp/bar.txt - /bar.txt"
        );
        let abc = &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("R", "/")];
        assert_eq!(
            x("${FOO/$NEEDLE/$R} - ${FOO//$NEEDLE/$R}", abc),
            "/foo/b/c.txt - /foo/c.txt"
        );
        let url = &[
            ("FOO", "http://google.de"),
            ("N", "http://"),
            ("R", "https://"),
        ];
        assert_eq!(x("${FOO/$N/$R}", url), "https://google.de");
        assert_eq!(
            x("${FOO//\\//\\/}", &[("FOO", "/tmp/foo.txt")]),
            "\\/tmp\\/foo.txt"
        );
        assert_eq!(
            x("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")]),
            "wwxxyy"
        );
        assert_eq!(x("${FOO///}", &[("FOO", "xxyy")]), "xxyy");
        assert_eq!(x("${FOO///}", &[]), "");
        for bad in ["${FOO//ww}", "${FOO//}"] {
            assert!(lexer.expand_word(bad, &vars(&[("FOO", "xxyy")])).is_err());
        }
        let release = "v-${V}.${OS}-${ARCH}${VARIANT:+-${VARIANT}}.tgz";
        let arm = &[
            ("V", "1"),
            ("OS", "linux"),
            ("ARCH", "arm"),
            ("VARIANT", "v7"),
        ];
        assert_eq!(x(release, arm), "v-1.linux-arm-v7.tgz");
        let arm64 = &[
            ("V", "1"),
            ("OS", "linux"),
            ("ARCH", "arm64"),
            ("VARIANT", ""),
        ];
        assert_eq!(x(release, arm64), "v-1.linux-arm64.tgz");
    }

    /// Our own cases after BuildKit's `wordsTest`: words after expansion and splitting.
    #[test]
    fn word_splitting() {
        let env = vars(&[
            ("hi", "hi"),
            ("space", "abc  def"),
            ("leading", "  ab c"),
            ("trailing", "ab c   "),
        ]);
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("hello", Some(&["hello"])),
            ("hello${hi}bye", Some(&["hellohibye"])),
            ("hello${nope}bye", Some(&["hellobye"])),
            ("hello${space}bye", Some(&["helloabc", "defbye"])),
            ("hello\"${space}\"bye", Some(&["helloabc  defbye"])),
            ("hello \"${space}\"bye", Some(&["hello", "abc  defbye"])),
            ("hello${leading}def", Some(&["hello", "ab", "cdef"])),
            ("hello\"${leading}\" def", Some(&["hello  ab c", "def"])),
            ("hello${leading}", Some(&["hello", "ab", "c"])),
            ("hello${trailing}", Some(&["helloab", "c"])),
            ("hello${trailing}d", Some(&["helloab", "c", "d"])),
            ("hello\"${trailing}\"d", Some(&["helloab c   d"])),
            ("hel\"lo${trailing}\"", Some(&["helloab c   "])),
            ("hello\" there  \"", Some(&["hello there  "])),
            ("hello there     ", Some(&["hello", "there"])),
            ("hello\\ there", Some(&["hello there"])),
            ("hello\" there", None),
            ("hello\\\" there", Some(&["hello\"", "there"])),
            ("hello\"\\\\there\"", Some(&["hello\\there"])),
            ("hello\"\\there\"", Some(&["hello\\there"])),
            ("hello'\\\\there'", Some(&["hello\\\\there"])),
            ("hello'$there'", Some(&["hello$there"])),
        ];
        let lexer = Lexer::new('\\');
        for (input, want) in cases {
            let got = lexer.expand_words(input, &env);
            match want {
                Some(w) => assert_eq!(got.unwrap(), *w, "{input:?}"),
                None => assert!(got.is_err(), "{input:?} should fail"),
            }
        }
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let env = vars(&[("A", "1")]);
        assert_eq!(
            lexer.expand_word("C:\\dir `$A $A", &env).unwrap(),
            "C:\\dir $A 1"
        );
        assert_eq!(lexer.expand_word("\"a`\"b\"", &env).unwrap(), "a\"b");
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let env = vars(&[("NAME", "me")]);
        let body = "say \"hi $NAME\" and 'bye ${NAME}' \\$NAME\n";
        assert_eq!(
            Lexer::heredoc().expand_word(body, &env).unwrap(),
            "say \"hi me\" and 'bye me' $NAME\n"
        );
    }

    #[test]
    fn hostile_nesting_is_refused_not_a_stack_overflow() {
        let lexer = Lexer::new('\\');
        let deep = "${a:-".repeat(100_000) + &"}".repeat(100_000);
        let err = lexer.expand_word(&deep, &NoVariables).unwrap_err();
        assert_eq!(err.kind, ExpandErrorKind::TooDeep);
        assert!(err.to_string().len() < 200, "{err}");
        let fine = "${a:-".repeat(10) + "x" + &"}".repeat(10);
        assert_eq!(lexer.expand_word(&fine, &NoVariables).unwrap(), "x");
    }

    #[test]
    fn closures_are_variables() {
        let lookup = |name: &str| (name == "X").then(|| "from-closure".to_owned());
        assert_eq!(
            Lexer::new('\\').expand_word("$X-${Y:-d}", &lookup).unwrap(),
            "from-closure-d"
        );
        assert_eq!(
            Lexer::new('\\').expand_word("$X", &NoVariables).unwrap(),
            ""
        );
    }
}
