//! Glob patterns, compiled once and matched without regular expressions, and lexical cleaning
//! of slash-separated paths.
//!
//! Two dialects share one matcher:
//!
//! - [`Glob::path`]: the patterns of `.dockerignore`, `COPY --exclude` and COPY/ADD sources, as
//!   moby/patternmatcher reads them: Go's `filepath.Match` (`*` and `?` never match `/`,
//!   `[a-z]`/`[^a-z]` classes, `\` escapes) plus `**`, which matches any number of directories
//!   (`**/` is "nothing, or anything ending in `/`"; a trailing `**` is "anything").
//! - [`Glob::shell`]: the patterns of `${v#pat}`, `${v%pat}` and `${v/pat/rep}` as BuildKit's
//!   shell lexer reads them: `*` matches any run of characters, `?` any one character, `\`
//!   escapes only `*`, `?` and `\` (and drops before `}` and `/`), and `[` is an ordinary
//!   character.
//!
//! Matching simulates the pattern as a small NFA over the text, so it takes time proportional
//! to the text times the pattern whatever the pattern (no exponential backtracking on hostile
//! `.dockerignore` lines). Literal patterns, `dir/**` prefixes and `**/name` suffixes take a
//! plain string comparison.

use std::fmt;

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct GlobError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character.
    Literal(char),
    /// `*`: any run of characters (not `/` in a path pattern).
    Star,
    /// `?`: any one character (not `/` in a path pattern).
    AnyChar,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` (or `**/`) inside a path pattern: nothing, or anything that ends in `/`.
    AnyDirs,
    /// A trailing `**`: anything at all.
    AnyRest,
}

impl Token {
    fn accepts(&self, c: char, path: bool) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::Star | Token::AnyChar => !(path && c == '/'),
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::AnyDirs | Token::AnyRest => true,
        }
    }
}

/// How a pattern is matched: a plain comparison when it allows one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// No wildcards: the text equals this.
    Exact(String),
    /// `prefix**`: the text starts with this.
    Prefix(String),
    /// `**suffix` with no other wildcard: the text ends with this (and `**/name` also matches
    /// `name` itself).
    Suffix(String),
    /// Anything else: simulate the tokens.
    Tokens,
}

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
    shape: Shape,
    path: bool,
    /// The bit-parallel tables, for a pattern of fewer than 64 tokens.
    masks: Option<Box<Masks>>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Glob").field(&self.source).finish()
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Glob {
    /// Compiles a path pattern (`.dockerignore`, `COPY --exclude`, COPY/ADD sources). The
    /// pattern is used as given: clean it first with [`clean_path`] where docker does.
    pub fn path(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    let slash = chars.get(i) == Some(&'/');
                    if slash {
                        i += 1;
                    }
                    if i == chars.len() {
                        tokens.push(Token::AnyRest);
                    } else if tokens.is_empty() && !slash && is_literal_path(&chars[i..]) {
                        // patternmatcher matches a leading `**name` as "ends with name".
                        tokens.push(Token::AnyRest);
                    } else {
                        tokens.push(Token::AnyDirs);
                    }
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyChar),
                '[' => {
                    let (class, next) = parse_class(&chars, i).map_err(err)?;
                    tokens.push(class);
                    i = next;
                }
                '\\' => {
                    let escaped = *chars
                        .get(i)
                        .ok_or_else(|| err("it ends with a lone '\\'"))?;
                    i += 1;
                    tokens.push(Token::Literal(escaped));
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Glob::with_shape(pattern, tokens, true))
    }

    /// Compiles a shell pattern (`${v#pat}`, `${v%pat}`, `${v/pat/rep}`).
    pub fn shell(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => match chars.next() {
                    // `}` and `/` are escaped to get them past `${...}`: the escape is no
                    // part of the pattern.
                    Some(e @ ('}' | '/')) => Token::Literal(e),
                    Some(e @ ('*' | '?' | '\\')) => Token::Literal(e),
                    Some(_) => return Err(err("'\\' may only escape '*', '?', '\\', '}' or '/'")),
                    None => return Err(err("it ends with a lone '\\'")),
                },
                c => Token::Literal(c),
            });
        }
        Ok(Glob::with_shape(pattern, tokens, false))
    }

    fn with_shape(source: &str, tokens: Vec<Token>, path: bool) -> Glob {
        let literal = |ts: &[Token]| -> Option<String> {
            ts.iter()
                .map(|t| match t {
                    Token::Literal(c) => Some(*c),
                    _ => None,
                })
                .collect()
        };
        let shape = if let Some(s) = literal(&tokens) {
            Shape::Exact(s)
        } else if let Some((Token::AnyRest, head)) = tokens.split_last()
            && let Some(prefix) = literal(head)
        {
            Shape::Prefix(prefix)
        } else if let Some((first @ (Token::AnyRest | Token::AnyDirs), rest)) = tokens.split_first()
            && let Some(mut suffix) = literal(rest)
            && !suffix.is_empty()
        {
            if *first == Token::AnyDirs {
                // `(.*/)?name` is "ends with /name, or is name"
                suffix.insert(0, '/');
            }
            Shape::Suffix(suffix)
        } else {
            Shape::Tokens
        };
        Glob::from_parts(source, tokens, shape, path)
    }

    fn from_parts(source: &str, tokens: Vec<Token>, shape: Shape, path: bool) -> Glob {
        let masks = Masks::new(&tokens, path).map(Box::new);
        Glob {
            source: source.to_owned(),
            tokens,
            shape,
            path,
            masks,
        }
    }

    /// The pattern as it was given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcards (it matches only the text it spells).
    pub fn is_literal(&self) -> bool {
        matches!(self.shape, Shape::Exact(_))
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Exact(s) => s == text,
            Shape::Prefix(p) => text.starts_with(p.as_str()),
            Shape::Suffix(s) => {
                text.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|name| name == text)
            }
            Shape::Tokens => {
                let mut run = Run::new(self);
                text.chars().all(|c| run.step(c)) && run.accepts()
            }
        }
    }

    /// Whether `path` or one of its parent directories matches (a path pattern that matches a
    /// directory covers everything inside it). `path` is relative and cleaned.
    pub fn matches_path_or_parent(&self, path: &str) -> bool {
        match &self.shape {
            Shape::Tokens => {
                // One pass: a match at a `/` is a match of that parent directory.
                let mut run = Run::new(self);
                for c in path.chars() {
                    if c == '/' && run.accepts() {
                        return true;
                    }
                    if !run.step(c) {
                        return false;
                    }
                }
                run.accepts()
            }
            // A parent that is this name is a prefix of the path followed by `/`.
            Shape::Exact(name) => path
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            // A parent starts with the prefix only if the path does.
            Shape::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Shape::Suffix(_) => {
                self.matches(path) || parents(path).any(|parent| self.matches(parent))
            }
        }
    }

    /// Whether some path strictly inside directory `dir` could match (`dir` is relative and
    /// cleaned; `.` is the root). Conservative: true unless no continuation can match.
    pub fn could_match_inside(&self, dir: &str) -> bool {
        if dir == "." {
            return true;
        }
        if self.matches_path_or_parent(dir) {
            return true;
        }
        let mut run = Run::new(self);
        dir.chars().chain(['/']).all(|c| run.step(c))
    }

    /// The end of the shortest (or, `longest`, the longest) prefix of `text` that matches,
    /// as a byte offset.
    pub fn match_prefix(&self, text: &str, longest: bool) -> Option<usize> {
        let mut run = Run::new(self);
        let mut found = run.accepts().then_some(0);
        if found.is_some() && !longest {
            return found;
        }
        for (i, c) in text.char_indices() {
            if !run.step(c) {
                break;
            }
            if run.accepts() {
                found = Some(i + c.len_utf8());
                if !longest {
                    break;
                }
            }
        }
        found
    }

    /// The start of the shortest (or, `longest`, the longest) suffix of `text` that matches,
    /// as a byte offset.
    pub fn match_suffix(&self, text: &str, longest: bool) -> Option<usize> {
        let reversed = Glob::from_parts(
            &self.source,
            self.tokens.iter().rev().cloned().collect(),
            Shape::Tokens,
            self.path,
        );
        let mut run = Run::new(&reversed);
        let mut found = run.accepts().then_some(text.len());
        if found.is_some() && !longest {
            return found;
        }
        for (i, c) in text.char_indices().rev() {
            if !run.step(c) {
                break;
            }
            if run.accepts() {
                found = Some(i);
                if !longest {
                    break;
                }
            }
        }
        found
    }

    /// The leftmost match in `text` at or after `from` (the longest one starting there), as a
    /// byte range.
    fn find_from(&self, text: &str, from: usize) -> Option<std::ops::Range<usize>> {
        let starts = text[from..]
            .char_indices()
            .map(|(i, _)| from + i)
            .chain([text.len()]);
        for start in starts {
            if let Some(len) = self.match_prefix(&text[start..], true) {
                return Some(start..start + len);
            }
        }
        None
    }

    /// `text` with the first match (or every match, `all`) replaced by `replacement`. Empty
    /// matches right after a previous match are skipped, as Go's `ReplaceAllString` does.
    pub fn replace(&self, text: &str, replacement: &str, all: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        let mut last_end = None;
        while pos <= text.len() {
            let Some(m) = self.find_from(text, pos) else {
                break;
            };
            if m.is_empty() && last_end == Some(m.start) {
                // An empty match where the previous one ended: step over one character.
                let Some(c) = text[m.start..].chars().next() else {
                    break;
                };
                out.push_str(&text[pos..m.start + c.len_utf8()]);
                pos = m.start + c.len_utf8();
                continue;
            }
            out.push_str(&text[pos..m.start]);
            out.push_str(replacement);
            last_end = Some(m.end);
            if !all {
                pos = m.end;
                break;
            }
            if m.is_empty() {
                match text[m.start..].chars().next() {
                    Some(c) => {
                        out.push(c);
                        pos = m.start + c.len_utf8();
                    }
                    None => {
                        pos = text.len() + 1;
                        break;
                    }
                }
            } else {
                pos = m.end;
            }
        }
        if pos <= text.len() {
            out.push_str(&text[pos..]);
        }
        out
    }
}

/// A pattern's NFA in motion: which token positions are live.
///
/// Position `i` live means the tokens before `i` have matched and token `i` may start (or, for
/// a star, continue); `inner` positions are `**`s part way through a run that does not end in
/// `/` yet, so they cannot be left. Patterns of fewer than 64 tokens run bit-parallel on
/// [`Masks`]; longer ones walk their live positions.
enum Run<'g> {
    Small {
        masks: &'g Masks,
        live: u64,
        inner: u64,
    },
    Large {
        glob: &'g Glob,
        live: Bits,
        inner: Bits,
    },
}

impl<'g> Run<'g> {
    fn new(glob: &'g Glob) -> Self {
        if let Some(masks) = &glob.masks {
            return Run::Small {
                masks,
                live: masks.close(1),
                inner: 0,
            };
        }
        let n = glob.tokens.len() + 1;
        let mut live = Bits::new(n);
        live.set(0);
        close(&glob.tokens, &mut live);
        Run::Large {
            glob,
            live,
            inner: Bits::new(n),
        }
    }

    /// Consumes `c`; false when no position is live any more (nothing can match).
    fn step(&mut self, c: char) -> bool {
        match self {
            Run::Small { masks, live, inner } => {
                let active = *live | *inner;
                let mut next = (active & masks.consumes(c)) << 1;
                next |= active & masks.loop_any;
                if c != '/' {
                    next |= active & masks.loop_not_slash;
                }
                let dirs = active & masks.dirs;
                if c == '/' {
                    next |= dirs;
                    *inner = 0;
                } else {
                    *inner = dirs;
                }
                *live = masks.close(next);
                *live != 0 || *inner != 0
            }
            Run::Large { glob, live, inner } => {
                let tokens = &glob.tokens;
                let n = tokens.len() + 1;
                let mut next = Bits::new(n);
                let mut next_inner = Bits::new(n);
                let mut any = false;
                for i in live.union(inner) {
                    let Some(token) = tokens.get(i) else {
                        continue;
                    };
                    if !token.accepts(c, glob.path) {
                        continue;
                    }
                    any = true;
                    match token {
                        Token::Star | Token::AnyRest => next.set(i),
                        Token::AnyDirs if c == '/' => next.set(i),
                        Token::AnyDirs => next_inner.set(i),
                        _ => next.set(i + 1),
                    }
                }
                close(tokens, &mut next);
                *live = next;
                *inner = next_inner;
                any
            }
        }
    }

    fn accepts(&self) -> bool {
        match self {
            Run::Small { masks, live, .. } => live & masks.accept != 0,
            Run::Large { glob, live, .. } => live.get(glob.tokens.len()),
        }
    }
}

/// Adds the positions reachable without consuming anything: past stars, and past a `**` that
/// is empty so far or has just consumed a `/`.
fn close(tokens: &[Token], live: &mut Bits) {
    for (i, token) in tokens.iter().enumerate() {
        if live.get(i) && matches!(token, Token::Star | Token::AnyDirs | Token::AnyRest) {
            live.set(i + 1);
        }
    }
}

/// The tables of a pattern run bit-parallel: bit `i` stands for token position `i`.
#[derive(Clone, PartialEq, Eq)]
struct Masks {
    /// The consuming tokens (literals, `?`, classes) that accept each ASCII character.
    ascii: [u64; 128],
    /// The consuming tokens, for other characters.
    consuming: Vec<(usize, Token)>,
    path: bool,
    /// Positions that may be passed without consuming (stars).
    epsilon: u64,
    /// Positions that consume any character and stay (`**` at the end; `*` in the shell).
    loop_any: u64,
    /// Positions that consume any character but `/` and stay (`*` in a path).
    loop_not_slash: u64,
    /// `**` inside a path pattern.
    dirs: u64,
    /// The position past the last token.
    accept: u64,
}

impl Masks {
    fn new(tokens: &[Token], path: bool) -> Option<Masks> {
        if tokens.len() >= 64 {
            return None;
        }
        let mut m = Masks {
            ascii: [0; 128],
            consuming: Vec::new(),
            path,
            epsilon: 0,
            loop_any: 0,
            loop_not_slash: 0,
            dirs: 0,
            accept: 1 << tokens.len(),
        };
        for (i, token) in tokens.iter().enumerate() {
            let bit = 1u64 << i;
            match token {
                Token::Star if path => m.loop_not_slash |= bit,
                Token::Star | Token::AnyRest => m.loop_any |= bit,
                Token::AnyDirs => m.dirs |= bit,
                _ => {
                    m.consuming.push((i, token.clone()));
                    for (c, mask) in (0u8..128).zip(m.ascii.iter_mut()) {
                        if token.accepts(char::from(c), path) {
                            *mask |= bit;
                        }
                    }
                    continue;
                }
            }
            m.epsilon |= bit;
        }
        Some(m)
    }

    fn consumes(&self, c: char) -> u64 {
        match self.ascii.get(c as usize) {
            Some(mask) => *mask,
            None => self
                .consuming
                .iter()
                .filter(|(_, t)| t.accepts(c, self.path))
                .fold(0, |m, (i, _)| m | 1 << i),
        }
    }

    fn close(&self, mut live: u64) -> u64 {
        loop {
            let add = (live & self.epsilon) << 1;
            if add & !live == 0 {
                return live;
            }
            live |= add;
        }
    }
}

/// A set of NFA positions: on the stack for patterns of up to 256 tokens.
#[derive(Clone)]
enum Bits {
    /// The words in use, and the count of them.
    Inline([u64; 4], usize),
    Heap(Vec<u64>),
}

impl Bits {
    fn new(n: usize) -> Bits {
        let words = n.div_ceil(64);
        if words <= 4 {
            Bits::Inline([0; 4], words)
        } else {
            Bits::Heap(vec![0; words])
        }
    }

    fn words(&self) -> &[u64] {
        match self {
            Bits::Inline(w, len) => &w[..*len],
            Bits::Heap(w) => w,
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words()[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        let words = match self {
            Bits::Inline(w, len) => &mut w[..*len],
            Bits::Heap(w) => &mut w[..],
        };
        words[i / 64] |= 1 << (i % 64);
    }

    /// The positions set in either, in order.
    fn union<'a>(&'a self, other: &'a Bits) -> impl Iterator<Item = usize> + 'a {
        self.words()
            .iter()
            .zip(other.words())
            .enumerate()
            .flat_map(|(w, (a, b))| {
                let mut bits = a | b;
                std::iter::from_fn(move || {
                    (bits != 0).then(|| {
                        let i = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        w * 64 + i
                    })
                })
            })
    }
}

/// Whether a pattern tail has no wildcard at all.
fn is_literal_path(chars: &[char]) -> bool {
    !chars.iter().any(|c| matches!(c, '*' | '?' | '[' | '\\'))
}

/// Parses a `[...]` class whose `[` is just before `start`, as Go's `filepath.Match` does:
/// `]` closes it unless it is the first element, `-` and `]` must be escaped as elements.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), &'static str> {
    const UNCLOSED: &str = "a '[' class is not closed";
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return Err(UNCLOSED),
            Some(']') if !ranges.is_empty() => {
                return Ok((Token::Class { negated, ranges }, i + 1));
            }
            _ => {}
        }
        let (lo, after) = class_char(chars, i)?;
        i = after;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, after) = class_char(chars, i + 1)?;
            if h < lo {
                return Err("a class range goes backwards");
            }
            hi = h;
            i = after;
        }
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &[char], i: usize) -> Result<(char, usize), &'static str> {
    match chars.get(i) {
        None => Err("a '[' class is not closed"),
        Some('-' | ']') => Err("'-' and ']' must be escaped inside a class"),
        Some('\\') => match chars.get(i + 1) {
            Some(&c) => Ok((c, i + 2)),
            None => Err("it ends with a lone '\\'"),
        },
        Some(&c) => Ok((c, i + 1)),
    }
}

/// The parent directories of a relative path, nearest last: `a/b/c` gives `a`, `a/b`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(|(i, _)| &path[..i])
}

/// Cleans a slash-separated path lexically, as Go's `path.Clean`: no repeated `/`, no `.`
/// elements, `..` resolved against what precedes it (and dropped at the root), no trailing `/`;
/// an empty result is `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_match(pattern: &str, text: &str) -> bool {
        Glob::path(pattern).unwrap().matches(text)
    }

    #[test]
    fn go_filepath_match_vectors() {
        // (pattern, text, matches): Go's own filepath.Match cases, as patternmatcher runs them.
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(path_match(pattern, text), want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[z-a]",
        ] {
            assert!(Glob::path(p).is_err(), "{p:?} should be refused");
        }
        assert!(Glob::shell("a\\x").is_err());
        assert!(Glob::shell("\\").is_err());
    }

    #[test]
    fn double_star_vectors() {
        // patternmatcher's `**` cases (parents included, as MatchesOrParentMatches does).
        let cases = [
            ("**", "file", true),
            ("**", "dir/file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\*b", "a*b", true),
        ];
        for (pattern, text, want) in cases {
            let g = Glob::path(pattern).unwrap();
            assert_eq!(
                g.matches_path_or_parent(text),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn fast_paths_agree_with_the_automaton() {
        let texts = [
            "a",
            "a/b",
            "dir/file",
            "x/dir/file",
            "myfile",
            "file",
            "dir",
            "dirx/y",
        ];
        for pattern in ["dir/**", "**/file", "**file", "file", "**", "abc**"] {
            let fast = Glob::path(pattern).unwrap();
            assert_ne!(fast.shape, Shape::Tokens, "{pattern} has a fast path");
            let slow = Glob {
                shape: Shape::Tokens,
                masks: None,
                ..fast.clone()
            };
            for t in texts {
                assert_eq!(fast.matches(t), slow.matches(t), "{pattern:?} vs {t:?}");
                assert_eq!(
                    fast.matches_path_or_parent(t),
                    slow.matches_path_or_parent(t),
                    "{pattern:?} vs {t:?} (parents)"
                );
            }
        }
    }

    #[test]
    fn inside_a_directory() {
        let g = Glob::path("src/keep.txt").unwrap();
        assert!(g.could_match_inside("src"));
        assert!(!g.could_match_inside("secret"));
        assert!(!g.could_match_inside("src/sub"));
        let g = Glob::path("**/keep.txt").unwrap();
        assert!(g.could_match_inside("anything/at/all"));
        let g = Glob::path("*/keep").unwrap();
        assert!(g.could_match_inside("a"));
        assert!(!g.could_match_inside("a/b"));
        // A pattern that matches the directory itself covers everything inside.
        assert!(
            Glob::path("sec*")
                .unwrap()
                .could_match_inside("secret/deep")
        );
    }

    #[test]
    fn long_patterns() {
        let long = format!("{}*{}", "a".repeat(300), "b".repeat(300));
        let g = Glob::path(&long).unwrap();
        assert!(g.matches(&format!("{}xyz{}", "a".repeat(300), "b".repeat(300))));
        assert!(!g.matches(&format!("{}xyz{}", "a".repeat(299), "b".repeat(300))));
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        let g = Glob::path(&"*a".repeat(40)).unwrap();
        let text = "a".repeat(39) + "b";
        let t = std::time::Instant::now();
        assert!(!g.matches(&text));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn shell_prefix_and_suffix() {
        let g = Glob::shell("*x").unwrap();
        assert_eq!(g.match_prefix("axbxc", false), Some(2));
        assert_eq!(g.match_prefix("axbxc", true), Some(4));
        let g = Glob::shell("x*").unwrap();
        assert_eq!(g.match_suffix("axbxc", false), Some(3));
        assert_eq!(g.match_suffix("axbxc", true), Some(1));
        let g = Glob::shell("").unwrap();
        assert_eq!(g.match_prefix("abc", true), Some(0));
        assert_eq!(g.match_suffix("abc", true), Some(3));
        // `*` crosses `/` in a shell pattern
        assert_eq!(
            Glob::shell("*/").unwrap().match_prefix("a/b/c", true),
            Some(4)
        );
        assert_eq!(
            Glob::shell("[ab]").unwrap().match_prefix("[ab]c", false),
            Some(4)
        );
    }

    #[test]
    fn shell_replace() {
        let g = Glob::shell("/tmp").unwrap();
        assert_eq!(g.replace("/tmp/tmp/bar.txt", "", false), "/tmp/bar.txt");
        assert_eq!(g.replace("/tmp/tmp/bar.txt", "", true), "/bar.txt");
        let g = Glob::shell("\\*/").unwrap();
        assert_eq!(g.replace("/foo*/*/*.txt", ".", false), "/foo.*/*.txt");
        assert_eq!(g.replace("/foo*/*/*.txt", ".", true), "/foo..*.txt");
        let g = Glob::shell("/?/").unwrap();
        assert_eq!(g.replace("/a/foo/b/c.txt", "/", true), "/foo/c.txt");
        let empty = Glob::shell("").unwrap();
        assert_eq!(empty.replace("xy", "-", false), "-xy");
        assert_eq!(empty.replace("xy", "-", true), "-x-y-");
        assert_eq!(Glob::shell("a*").unwrap().replace("baaab", "X", true), "bX");
    }

    #[test]
    fn cleaning_paths() {
        for (raw, clean) in [
            ("", "."),
            (".", "."),
            ("./a", "a"),
            ("a/", "a"),
            ("a//b/./c/", "a/b/c"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//a", "/a"),
            ("a/b/..", "a"),
        ] {
            assert_eq!(clean_path(raw), clean, "{raw:?}");
        }
    }
}
