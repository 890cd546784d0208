//! What a build reports as it goes. The builder never prints: the CLI turns these events into
//! a live view on a terminal, plain lines, or JSON.

use std::time::Duration;

/// A step of the build, numbered in the order steps start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// 1-based, unique in the build.
    pub id: usize,
    /// The stage's name or index (`build`, `2`).
    pub stage: String,
    /// The step's index within its stage (1-based) and the stage's step count.
    pub index: usize,
    pub total: usize,
    /// The instruction as written (variables not expanded).
    pub text: String,
}

/// Something that happened during a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step starts.
    Start(StepInfo),
    /// A step's result came from the build cache.
    Cached { id: usize },
    /// A line the step's command wrote (stdout and stderr interleaved as they came).
    Output { id: usize, line: String },
    /// A step finished.
    Done { id: usize, elapsed: Duration },
    /// A step failed; the build stops.
    Failed { id: usize, error: String },
    /// Something worth a line that is not a step (a base image being pulled, a warning).
    Note(String),
}

/// Receives events. Implemented by the CLI's progress views (and by tests, which collect).
pub trait Reporter: Send {
    fn event(&mut self, event: Event);
}

impl Reporter for Vec<Event> {
    fn event(&mut self, event: Event) {
        self.push(event);
    }
}
