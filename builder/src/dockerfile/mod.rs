//! The Dockerfile parser: text to a typed AST with line numbers. Pure: no I/O.
//!
//! It reads the Dockerfile reference syntax as BuildKit does:
//!
//! - parser directives at the very top (`# escape=`` ` `` changes the escape character,
//!   `# syntax=` and `# check=` are accepted and ignored); they end at the first line that is
//!   not one;
//! - comments (`#` first on a line, also between continuation lines), line continuations with
//!   the escape character (also at the end of the file; blank lines inside one are skipped
//!   with a [`Warning`]), keywords in any case;
//! - exec form (a JSON array of strings) for RUN, CMD, ENTRYPOINT, SHELL, and COPY/ADD/VOLUME
//!   lists; text that is not valid JSON falls back to the shell form as in docker, and SHELL
//!   requires JSON;
//! - heredocs for RUN, COPY and ADD (`<<EOF`, `<<-EOF` stripping tabs, `<<"EOF"`/`<<'EOF'`
//!   meaning no expansion, several per instruction), also under ONBUILD.
//!
//! Every instruction keeps its lines ([`Location`]) and its text, and every error names the
//! line and quotes the text: [`ParseError::in_file`] gives `Dockerfile:2: unknown instruction
//! FROBNICATE (FROBNICATE now)`.
//!
//! Values stay as written; variables are expanded later, in each step's scope, by
//! [`Command::expand`] (which instructions and which of their fields docker expands, and
//! how). FROM lines see only the global ARGs: [`crate::plan`] resolves them, along with the
//! stages and what a target needs.
//!
//! ```
//! use builder::dockerfile::{parse, Command};
//! let df = parse("FROM busybox AS base\nRUN echo hi\n").unwrap();
//! assert_eq!(df.instructions[1].location.start, 2);
//! assert!(matches!(df.instructions[1].command, Command::Run(_)));
//! ```

mod ast;
mod error;
mod expand;
mod instruction;
mod reader;
mod syntax;

pub use ast::{
    ArgDecl, Command, CommandLine, Copy, Dockerfile, From, Healthcheck, Heredoc, Instruction,
    KeyValue, Location, NetworkMode, Onbuild, Run, RunScript, SecurityMode, Source, Warning,
};
pub(crate) use error::Located;
pub use error::{ParseError, ParseErrorKind};

use reader::{LogicalLine, Reader};
use syntax::Json;

/// Parses a Dockerfile. Only ARG may come before the first FROM.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let mut reader = Reader::new(text);
    let mut instructions = Vec::new();
    let mut seen_from = false;
    while let Some(line) = reader.next_logical()? {
        let instruction = read_instruction(&mut reader, line)?;
        match instruction.command {
            Command::From(_) => seen_from = true,
            Command::Arg(_) => {}
            _ if !seen_from => {
                return Err(ParseError {
                    location: instruction.location,
                    kind: ParseErrorKind::NoFrom(instruction.keyword().to_owned()),
                    text: instruction.original,
                });
            }
            _ => {}
        }
        instructions.push(instruction);
    }
    if !seen_from {
        return Err(ParseError {
            location: Location::line(reader.line().max(1)),
            text: String::new(),
            kind: ParseErrorKind::NoStages,
        });
    }
    Ok(Dockerfile {
        escape: reader.escape,
        syntax: reader.syntax,
        instructions,
        warnings: reader.warnings,
    })
}

/// Parses an ONBUILD trigger as an image config stores it ([`Onbuild::trigger`]), when the
/// image is used as a base: one instruction, neither FROM, MAINTAINER nor ONBUILD.
pub fn parse_trigger(trigger: &str) -> Result<Instruction, ParseError> {
    let mut reader = Reader::new(trigger);
    let err = |location, kind: ParseErrorKind| ParseError {
        location,
        text: trigger.to_owned(),
        kind,
    };
    let Some(line) = reader.next_logical()? else {
        return Err(err(
            Location::line(1),
            ParseErrorKind::invalid("an ONBUILD trigger is empty"),
        ));
    };
    let instruction = read_instruction(&mut reader, line)?;
    if reader.next_logical()?.is_some() {
        return Err(err(
            Location::line(1),
            ParseErrorKind::invalid("an ONBUILD trigger holds more than one instruction"),
        ));
    }
    if let Command::From(_) | Command::Maintainer(_) | Command::Onbuild(_) = instruction.command {
        return Err(err(
            instruction.location,
            ParseErrorKind::invalid(format!(
                "{} isn't allowed as an ONBUILD trigger",
                instruction.keyword()
            )),
        ));
    }
    Ok(instruction)
}

/// Turns a logical line into an instruction, reading its heredoc bodies from `reader`.
fn read_instruction(reader: &mut Reader<'_>, line: LogicalLine) -> Result<Instruction, ParseError> {
    let escape = reader.escape;
    let split = syntax::split_command(&line.text, escape);
    let error = |kind, end| ParseError {
        location: Location {
            start: line.start,
            end,
        },
        text: line.text.clone(),
        kind,
    };
    // ONBUILD's argument is an instruction of its own: the heredocs belong to it.
    let inner = split
        .keyword
        .eq_ignore_ascii_case("ONBUILD")
        .then(|| syntax::split_command(split.args, escape));
    let target = inner.as_ref().unwrap_or(&split);
    let mut heredocs = Vec::new();
    let json = matches!(syntax::json_array(target.args), Ok(Json::Strings(_)));
    if instruction::takes_heredocs(target.keyword) && !json && line.text.contains("<<") {
        let markers = syntax::heredocs_in_line(&line.text).map_err(|k| error(k, reader.line()))?;
        for mut doc in markers {
            let Some(body) = reader.heredoc_body(&doc.name, doc.strip_tabs) else {
                let kind = ParseErrorKind::invalid(format!(
                    "unterminated heredoc: no line {:?} ends it before the end of the file",
                    doc.name
                ));
                return Err(error(kind, reader.line()));
            };
            doc.body = body;
            heredocs.push(doc);
        }
    }
    let location = Location {
        start: line.start,
        end: reader.line(),
    };
    let command = match &inner {
        Some(inner) => instruction::onbuild(&split, inner, heredocs, &line.text, location, escape),
        None => instruction::command(&split, heredocs, escape),
    }
    .map_err(|kind| error(kind, location.end))?;
    Ok(Instruction {
        location,
        original: line.text,
        command,
    })
}

#[cfg(test)]
mod tests;
