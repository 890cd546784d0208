//! Physical lines to logical instruction lines, after BuildKit's parser: parser directives at
//! the top, comments, line continuations (comments and blank lines inside them skipped), and
//! heredoc bodies.

use super::ast::{Location, Warning};
use super::error::{ParseError, ParseErrorKind};

/// The directives this parser knows; any other `# key=value` ends the directives.
const DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// The Dockerfile's lines, read one logical line at a time.
pub(crate) struct Reader<'a> {
    /// The physical lines, each with its line ending.
    lines: Vec<&'a str>,
    /// How many lines are consumed (the 1-based number of the last one read).
    consumed: usize,
    /// The escape character, also the line continuation character.
    pub escape: char,
    /// `# syntax=`.
    pub syntax: Option<String>,
    directives_done: bool,
    seen_directives: Vec<String>,
    pub warnings: Vec<Warning>,
}

/// One instruction's text, continuation lines joined.
pub(crate) struct LogicalLine {
    /// The joined text.
    pub text: String,
    /// Its first line.
    pub start: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Reader {
            lines: text.split_inclusive('\n').collect(),
            consumed: 0,
            escape: '\\',
            syntax: None,
            directives_done: false,
            seen_directives: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The number of the last line read.
    pub fn line(&self) -> usize {
        self.consumed
    }

    fn next_physical(&mut self) -> Option<&'a str> {
        let line = *self.lines.get(self.consumed)?;
        self.consumed += 1;
        Some(line)
    }

    /// The next instruction line, or `None` at the end.
    pub fn next_logical(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        while let Some(raw) = self.next_physical() {
            let line = trim_newline(raw).trim_start();
            self.directive(line)?;
            if is_comment(line) {
                continue;
            }
            let start = self.consumed;
            let (first, mut ended) = self.trim_continuation(line);
            if ended && first.is_empty() {
                continue;
            }
            let mut text = first.to_owned();
            let mut empty_continuation = false;
            while !ended {
                let Some(raw) = self.next_physical() else {
                    break;
                };
                // Continuation lines keep their leading blanks, as docker's do.
                let line = trim_newline(raw);
                if is_comment(line) {
                    continue;
                }
                if line.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, end) = self.trim_continuation(line);
                text.push_str(part);
                ended = end;
            }
            if text.trim().is_empty() {
                continue;
            }
            if empty_continuation {
                self.warnings.push(Warning {
                    location: Location {
                        start,
                        end: self.consumed,
                    },
                    message: format!(
                        "empty continuation line in: {} (docker will make this an error)",
                        text.trim()
                    ),
                });
            }
            return Ok(Some(LogicalLine { text, start }));
        }
        Ok(None)
    }

    /// Reads a heredoc body up to the line that is `name` (after leading tabs, for `<<-`).
    /// The body keeps every line's ending. `None` when the file ends first.
    pub fn heredoc_body(&mut self, name: &str, strip_tabs: bool) -> Option<String> {
        let mut body = String::new();
        while let Some(raw) = self.next_physical() {
            let mut candidate = trim_newline(raw);
            if strip_tabs {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == name {
                return Some(body);
            }
            body.push_str(raw);
        }
        None
    }

    /// Strips a line continuation (the escape character, then only blanks, at the end of the
    /// line, not itself escaped); says whether the instruction ends on this line.
    fn trim_continuation<'l>(&self, line: &'l str) -> (&'l str, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        let Some(before) = body.strip_suffix(self.escape) else {
            return (line, true);
        };
        // `\\` at the end is an escaped escape, not a continuation.
        if before.ends_with(self.escape) {
            return (line, true);
        }
        (before, false)
    }

    /// Handles `line` as a possible parser directive (`# escape=`` ` ``), while the top of the
    /// file is still directives.
    fn directive(&mut self, line: &str) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((key, value)) = parse_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !DIRECTIVES.contains(&key.as_str()) {
            self.directives_done = true;
            return Ok(());
        }
        let err = |message: String| ParseError {
            location: Location::line(self.consumed),
            text: line.to_owned(),
            kind: ParseErrorKind::Invalid(message),
        };
        if self.seen_directives.contains(&key) {
            return Err(err(format!("only one {key} parser directive can be used")));
        }
        match key.as_str() {
            "escape" => match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                other => {
                    return Err(err(format!(
                        "invalid escape character {other:?}: it must be ` or \\"
                    )));
                }
            },
            "syntax" => self.syntax = Some(value.to_owned()),
            _ => {}
        }
        self.seen_directives.push(key);
        Ok(())
    }
}

/// `# key = value` (after leading blanks): the key and the trimmed value.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let (key, value) = rest.split_once('=')?;
    let key = key.trim_end();
    let mut chars = key.chars();
    let valid_key = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    let value = value.trim();
    (valid_key && !value.is_empty()).then_some((key, value))
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(text: &str) -> Vec<(usize, String)> {
        let mut r = Reader::new(text);
        let mut out = Vec::new();
        while let Some(l) = r.next_logical().unwrap() {
            out.push((l.start, l.text));
        }
        out
    }

    #[test]
    fn directives() {
        for (text, escape) in [
            ("# escape=`\nFROM x", '`'),
            ("#escape = `\n\nFROM x", '`'),
            ("  # ESCAPE=`\nFROM x", '`'),
            ("# comment\n# escape=`\nFROM x", '\\'),
            ("\n# escape=`\nFROM x", '\\'),
            ("FROM x\n# escape=`\n", '\\'),
            ("# unknown=1\n# escape=`\nFROM x", '\\'),
            ("# syntax=docker/dockerfile:1\n# escape=`\nFROM x", '`'),
        ] {
            let mut r = Reader::new(text);
            while r.next_logical().unwrap().is_some() {}
            assert_eq!(r.escape, escape, "{text:?}");
        }
        let mut r = Reader::new("# syntax = docker/dockerfile:1.7 \nFROM x");
        r.next_logical().unwrap();
        assert_eq!(r.syntax.as_deref(), Some("docker/dockerfile:1.7"));
        for bad in ["# escape=x\nFROM a", "# escape=`\n# escape=`\nFROM a"] {
            let mut r = Reader::new(bad);
            assert!(r.next_logical().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn continuations() {
        // Our own cases after BuildKit's `continueIndent`, `escapes` and `trailing-backslash`.
        let text = "FROM ubuntu:14.04\n\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\nRUN echo hello  \\\n  world\nRUN echo hello  \\  \nworld\nRUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\nRUN echo hello \\\n# this is a comment\n\n# this is a comment with a blank line surrounding it\n\nthis is some more useful stuff\nENV C trailing\\\\\nENV D x\n";
        let got = logical(text);
        let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "FROM ubuntu:14.04",
                "RUN echo hello  world  goodnight    moon  lightning",
                "RUN echo hello    world",
                "RUN echo hello  world",
                "RUN echo hi   world  goodnight",
                "RUN echo hello this is some more useful stuff",
                "ENV C trailing\\\\",
                "ENV D x",
            ]
        );
        let starts: Vec<usize> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [1, 3, 9, 11, 13, 20, 26, 27]);
    }

    #[test]
    fn continuation_at_eof_and_crlf() {
        assert_eq!(
            logical("FROM a\r\nRUN x \\\r\n  y\r\n"),
            [(1, "FROM a".to_owned()), (2, "RUN x   y".to_owned())]
        );
        assert_eq!(
            logical("RUN something \\"),
            [(1, "RUN something ".to_owned())]
        );
        assert_eq!(logical("\u{feff}FROM a"), [(1, "FROM a".to_owned())]);
        assert_eq!(
            logical("# escape=`\nRUN a `\n b"),
            [(2, "RUN a  b".to_owned())]
        );
    }

    #[test]
    fn empty_continuation_lines_warn() {
        let mut r = Reader::new("RUN a \\\n\n  b\nRUN c \\\n  d\n");
        while r.next_logical().unwrap().is_some() {}
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].message.contains("RUN a   b"),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.warnings[0].location, Location { start: 1, end: 3 });
    }

    #[test]
    fn heredoc_bodies() {
        let mut r = Reader::new("RUN <<EOF\nline 1\r\n\tEOF\nEOF\nRUN <<-X\n\tx\n\t\tX\nnext\n");
        r.next_logical().unwrap();
        assert_eq!(
            r.heredoc_body("EOF", false).as_deref(),
            Some("line 1\r\n\tEOF\n")
        );
        assert_eq!(r.line(), 4);
        r.next_logical().unwrap();
        assert_eq!(r.heredoc_body("X", true).as_deref(), Some("\tx\n"));
        assert_eq!(r.heredoc_body("nope", false), None);
    }
}
