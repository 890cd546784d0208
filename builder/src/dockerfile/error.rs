//! Why a Dockerfile does not parse: every error names its line and quotes the text.

use std::fmt;

use super::ast::Location;

/// A Dockerfile that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The lines of the offending instruction.
    pub location: Location,
    /// The offending text (the instruction as written, continuations joined).
    pub text: String,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A keyword docker does not know.
    #[error("unknown instruction {0}")]
    UnknownInstruction(String),
    /// A build instruction before the first FROM.
    #[error(
        "{0} comes before the first FROM: a Dockerfile starts with FROM (only ARG and parser directives may come before it)"
    )]
    NoFrom(String),
    /// A Dockerfile with no FROM at all (nothing but comments, blank lines and ARGs).
    #[error("the Dockerfile has no FROM instruction: there is nothing to build")]
    NoStages,
    /// A flag the instruction does not take.
    #[error("unknown flag --{flag} for {instruction} ({instruction} takes {accepted})")]
    UnknownFlag {
        /// The flag's name.
        flag: String,
        /// The instruction.
        instruction: String,
        /// The flags it takes, for the message.
        accepted: String,
    },
    /// A docker flag strata does not implement.
    #[error("{instruction} --{flag} is not supported by strata")]
    UnsupportedFlag {
        /// The flag's name.
        flag: &'static str,
        /// The instruction.
        instruction: String,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Invalid(String),
}

impl ParseErrorKind {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ParseErrorKind::Invalid(message.into())
    }
}

impl ParseError {
    /// The error as `FILE:LINE: message (text)`, e.g. `Dockerfile:2: unknown instruction
    /// FROBNICATE (FROBNICATE now)`.
    pub fn in_file<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        Located {
            file: Some(file),
            location: Some(self.location),
            message: &self.kind,
            text: &self.text,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Located {
            file: None,
            location: Some(self.location),
            message: &self.kind,
            text: &self.text,
        }
        .fmt(f)
    }
}

/// How errors about a place in a Dockerfile read: `line 2: …` or `Dockerfile:2: …`, then the
/// message, then the offending text (shortened) in parentheses.
pub(crate) struct Located<'a> {
    pub file: Option<&'a str>,
    pub location: Option<Location>,
    pub message: &'a dyn fmt::Display,
    pub text: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file, self.location) {
            (Some(file), Some(loc)) => write!(f, "{file}:{}: ", loc.start)?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(loc)) => write!(f, "line {}: ", loc.start)?,
            (None, None) => {}
        }
        write!(f, "{}", self.message)?;
        let text = self.text.trim();
        if !text.is_empty() {
            write!(f, " ({})", crate::shell_words::shorten(text))?;
        }
        Ok(())
    }
}
