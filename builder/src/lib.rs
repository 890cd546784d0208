//! builder: strata's Dockerfile builder.
//!
//! The pure half (no I/O, unit-tested without root):
//! - [`dockerfile`]: the parser, Dockerfile text to a typed AST with line numbers, and the
//!   per-instruction variable expansion;
//! - [`shell_words`]: docker's variable substitution and word splitting;
//! - [`dockerignore`]: `.dockerignore` (and `COPY --exclude`) patterns;
//! - [`plan`]: the build stages, which of them a target needs, and the global ARG scope;
//! - [`glob`]: the glob patterns the others share.

pub mod build;
pub mod dockerfile;
pub mod dockerignore;
pub mod glob;
pub mod plan;
pub mod shell_words;
