//! `.dockerignore`: which files of the build context a build leaves out, with
//! moby/patternmatcher's rules (also those of `COPY --exclude`).
//!
//! - One pattern per line; a line that starts with `#` is a comment; blanks around a pattern
//!   are ignored; a leading `/` or `./`, `..` elements and a trailing `/` are cleaned away
//!   (`secret/` is `secret`, a file or a directory).
//! - `*` matches within one path element, `?` one character, `[a-z]`/`[^a-z]` a class, `\`
//!   escapes, `**` any number of directories (`**/*.tmp` is every `.tmp` file at any depth).
//! - A pattern that matches a directory covers everything inside it.
//! - `!pattern` is an exception: it re-includes what earlier patterns excluded. Patterns apply
//!   in order; the last one that matches a path decides.
//!
//! Patterns are compiled once ([`Dockerignore::parse`]); checking a path runs each pattern
//! once over it, without regular expressions. A context walker asks [`Dockerignore::check`]
//! about each entry: a directory answered [`Verdict::ExcludedTree`] can be skipped whole, as
//! no exception could re-include anything in it.
//!
//! Which file to read is the caller's business: docker reads `<Dockerfile>.dockerignore`
//! beside the Dockerfile when there is one, else `.dockerignore` at the context's root.

use std::borrow::Cow;

use crate::glob::{Glob, GlobError, clean_path};

/// A `.dockerignore` line that is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {pattern:?}: {reason}", line.map_or("pattern".to_owned(), |l| format!(".dockerignore line {l}:")))]
pub struct DockerignoreError {
    /// The line of the `.dockerignore` file (1-based); `None` for patterns given one by one.
    pub line: Option<usize>,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What to do with one path of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Included,
    /// Leave it out. For a directory, something inside may still be re-included by an
    /// exception: walk into it, and keep the directory itself if something inside is kept.
    Excluded,
    /// Leave out this directory and everything inside it: no exception can match in there.
    ExcludedTree,
}

#[derive(Debug, Clone)]
struct Rule {
    glob: Glob,
    exception: bool,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    rules: Vec<Rule>,
}

impl Dockerignore {
    /// Reads the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Dockerignore, DockerignoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // Only a `#` in the very first column starts a comment.
            if line.starts_with('#') {
                continue;
            }
            if let Some(rule) = Rule::new(line).map_err(|reason| DockerignoreError {
                line: Some(i + 1),
                pattern: line.trim().to_owned(),
                reason,
            })? {
                rules.push(rule);
            }
        }
        Ok(Dockerignore { rules })
    }

    /// Patterns given one by one, as `COPY --exclude` gives them.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Dockerignore, DockerignoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut rules = Vec::new();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if let Some(rule) = Rule::new(pattern).map_err(|reason| DockerignoreError {
                line: None,
                pattern: pattern.to_owned(),
                reason,
            })? {
                rules.push(rule);
            }
        }
        Ok(Dockerignore { rules })
    }

    /// Whether there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out. The root
    /// itself (`.`) never is.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.check(path, false) != Verdict::Included
    }

    /// The verdict on `path` (relative to the context root, `/`-separated); `is_dir` tells
    /// whether it is a directory, which may then be skipped whole.
    pub fn check(&self, path: &str, is_dir: bool) -> Verdict {
        let path = clean_relative(path);
        if path == "." || self.rules.is_empty() {
            return Verdict::Included;
        }
        // The last rule that matches decides. As moby/patternmatcher does, only rules that
        // would change the verdict are tried: exclusions while included, exceptions while
        // excluded.
        let mut decider = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.exception == decider.is_some() && rule.glob.matches_path_or_parent(&path) {
                decider = (!rule.exception).then_some(i);
            }
        }
        let Some(decider) = decider else {
            return Verdict::Included;
        };
        // Only an exception after the rule that excluded it can re-include something inside
        // (if a later exclusion takes it out again, walking in was merely cautious).
        let reopened = is_dir
            && self.rules[decider + 1..]
                .iter()
                .any(|rule| rule.exception && rule.glob.could_match_inside(&path));
        if reopened {
            Verdict::Excluded
        } else {
            Verdict::ExcludedTree
        }
    }
}

impl Rule {
    /// The rule of one pattern line; `None` for a blank one.
    fn new(line: &str) -> Result<Option<Rule>, String> {
        let mut pattern = line.trim();
        if pattern.is_empty() {
            return Ok(None);
        }
        let exception = pattern.starts_with('!');
        if exception {
            pattern = pattern[1..].trim();
            if pattern.is_empty() {
                return Err("an exception (!) needs a pattern after it".to_owned());
            }
        }
        let mut cleaned = clean_path(pattern);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        let glob = Glob::path(&cleaned).map_err(|GlobError { reason, .. }| reason.to_owned())?;
        Ok(Some(Rule { glob, exception }))
    }
}

/// A walker's path as the patterns see it: relative, no `./`, no doubled or trailing `/`.
fn clean_relative(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    // Clean unless it is empty, starts or ends with `/`, or has an empty, `.` or `..` element.
    let mut clean = !(bytes.is_empty() || bytes[0] == b'/' || bytes[bytes.len() - 1] == b'/');
    if clean {
        for element in bytes.split(|&b| b == b'/') {
            if matches!(element, b"" | b"." | b"..") {
                clean = false;
                break;
            }
        }
    }
    if clean {
        return Cow::Borrowed(path);
    }
    let cleaned = clean_path(path);
    let relative = cleaned.trim_start_matches('/');
    Cow::Owned(if relative.is_empty() { "." } else { relative }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        Dockerignore::from_patterns(patterns)
            .unwrap()
            .is_excluded(path)
    }

    #[test]
    fn reading_the_file() {
        let text = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n ! /inverted/abs/path\n  #not a comment\n\\#escaped\n";
        let di = Dockerignore::parse(text).unwrap();
        let patterns: Vec<(&str, bool)> = di
            .rules
            .iter()
            .map(|r| (r.glob.as_str(), r.exception))
            .collect();
        assert_eq!(
            patterns,
            [
                ("test1", false),
                ("test2", false),
                ("a/file/here", false),
                ("lastfile", false),
                ("inverted/abs/path", true),
                ("#not a comment", false),
                ("\\#escaped", false),
            ]
        );
        assert!(di.is_excluded("#escaped"));
        let err = Dockerignore::parse("ok\n\n!\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.to_string().starts_with(".dockerignore line 3:"),
            "{err}"
        );
        let err = Dockerignore::parse("a[\n").unwrap_err();
        assert!(err.to_string().contains("\"a[\""), "{err}");
        assert!(Dockerignore::from_patterns(["! "]).is_err());
    }

    #[test]
    fn patternmatcher_vectors() {
        // (patterns, path, excluded): our own cases after moby/patternmatcher's tests.
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
            (&["*.go"], ".", false),
            (&[], "any/path/there", false),
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (&["dir"], "dir/sub/file", true),
            (&["dir/"], "dir/sub/file", true),
            (&["dir/**"], "dir", false),
            (&["*/sub"], "dir/sub/file", true),
            (&["./a/../b"], "b/c", true),
            (&["../outside"], "outside", false),
            (&["a?c"], "a/c", false),
            (&["a[/]c"], "a/c", true),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(excluded(patterns, path), *want, "{patterns:?} on {path:?}");
        }
    }

    #[test]
    fn conformance_case_05() {
        let di = Dockerignore::parse("*.log\n!keep.log\nsecret/\n**/*.tmp\n").unwrap();
        assert!(di.is_excluded("app.log"));
        assert!(!di.is_excluded("keep.log"));
        assert!(di.is_excluded("secret"));
        assert!(di.is_excluded("secret/key"));
        assert!(di.is_excluded("src/junk.tmp"));
        assert!(di.is_excluded("junk.tmp"));
        assert!(!di.is_excluded("src/main.c"));
        assert!(!di.is_excluded("src"));
        assert!(!di.is_excluded("Dockerfile"));
        assert!(!di.is_excluded("sub/app.log"), "*.log is only at the root");
        assert_eq!(di.check("secret", true), Verdict::ExcludedTree);
        assert_eq!(di.check("src", true), Verdict::Included);
    }

    #[test]
    fn whole_directories_are_skipped_only_when_nothing_inside_can_come_back() {
        let di = Dockerignore::from_patterns(["build", "!build/keep.txt", "node_modules"]).unwrap();
        assert_eq!(di.check("build", true), Verdict::Excluded);
        assert_eq!(di.check("build/keep.txt", false), Verdict::Included);
        assert_eq!(di.check("build/other", false), Verdict::ExcludedTree);
        assert_eq!(di.check("build/sub", true), Verdict::ExcludedTree);
        assert_eq!(di.check("node_modules", true), Verdict::ExcludedTree);
        // A wildcard exception reaches into any directory it could match in.
        let di = Dockerignore::from_patterns(["**/cache", "!**/cache/README"]).unwrap();
        assert_eq!(di.check("a/b/cache", true), Verdict::Excluded);
        assert!(!di.is_excluded("a/b/cache/README"));
        assert!(di.is_excluded("a/b/cache/x"));
        // An exception before the rule that excludes the directory cannot re-include.
        let di = Dockerignore::from_patterns(["!build/keep.txt", "build"]).unwrap();
        assert_eq!(di.check("build", true), Verdict::ExcludedTree);
        assert!(di.is_excluded("build/keep.txt"));
        // Excluding everything but one file.
        let di = Dockerignore::from_patterns(["*", "!src/main.c"]).unwrap();
        assert_eq!(di.check("src", true), Verdict::Excluded);
        assert_eq!(di.check("docs", true), Verdict::ExcludedTree);
        assert!(!di.is_excluded("src/main.c"));
        assert!(di.is_excluded("src/other.c"));
    }

    #[test]
    fn walker_paths_are_cleaned() {
        let di = Dockerignore::from_patterns(["a/b"]).unwrap();
        for p in ["a/b", "./a/b", "/a/b", "a//b", "a/b/", "a/./b", "x/../a/b"] {
            assert!(di.is_excluded(p), "{p}");
        }
        assert!(!di.is_excluded("./"));
        assert!(!di.is_excluded(""));
    }
}
