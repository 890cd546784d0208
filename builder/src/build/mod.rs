//! Building: a parsed Dockerfile, a context directory and options in; an image in the store out.
//!
//! - [`exec`] runs the stages a target needs, step by step, with the cache;
//! - [`copy`] is COPY and ADD, [`fetch`] ADD's URL sources; [`sandbox`] runs RUN steps in
//!   the runner's sandbox, [`run_mount`] parses their `--mount`s and [`secrets`] holds the
//!   build's secrets and ssh agents they use;
//! - [`state`] is the image a stage has built so far and the cache of steps;
//! - [`events`] is what a build reports as it goes; [`userdb`] resolves user and group names.

pub mod copy;
pub mod events;
pub mod exec;
pub mod fetch;
pub mod run_mount;
pub mod sandbox;
pub mod secrets;
pub mod state;
pub mod userdb;

pub use events::{Event, Reporter, StepInfo};
pub use exec::{
    BuildError, BuildOptions, Built, CacheSource, DockerfileSource, Network, Squash, build,
};
pub use secrets::{Secret, SshAgent};
