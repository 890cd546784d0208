//! All user-facing output goes through [`Printer`]: results on stdout, notices and errors on
//! stderr. Library crates never print; they report events that the commands render here.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Display;
use std::io::{IsTerminal, Write};

/// Where and how to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Printer;

impl Printer {
    /// A result line on stdout.
    pub fn out(&self, line: impl Display) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    /// Raw bytes on stdout (JSON documents, archives to a pipe).
    pub fn out_bytes(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// A notice on stderr.
    pub fn note(&self, line: impl Display) {
        eprintln!("{line}");
    }

    /// An error on stderr: the error and its causes on one line.
    pub fn error(&self, err: &anyhow::Error) {
        eprintln!("strata: error: {}", one_line(err));
    }

    /// Where live progress views draw: stderr, redrawn in place.
    pub fn progress_target(&self) -> indicatif::ProgressDrawTarget {
        indicatif::ProgressDrawTarget::stderr()
    }

    /// Whether stdin is a terminal (prompts need one).
    pub fn stdin_is_tty(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// A prompt on stderr, without a newline, for an answer on stdin.
    pub fn prompt(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{text}");
        let _ = err.flush();
    }

    /// Whether stderr is a terminal (live progress views go there).
    pub fn stderr_is_tty(&self) -> bool {
        std::io::stderr().is_terminal()
    }
}

/// An error and its causes joined with `: `, leaving out a cause whose text the message
/// already holds (error types that show their source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io)
            .context("open /x: gone")
            .context("loading /x");
        assert_eq!(one_line(&e), "loading /x: open /x: gone");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
    }
}
