//! Transfer progress of `pull` and `push` (and `build --push`): one bar per blob on a terminal,
//! plain lines otherwise, or one JSON event per line on stdout with `--progress json`, then a
//! summary of bytes and time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_spec::image::Digest;
use registry_client::{BlobKind, Event, Reporter, Skipped};
use serde_json::json;

use crate::cli::ProgressMode;
use crate::commands::human_size;
use crate::printer::Printer;

/// How often a JSON progress event is written per blob, at most.
const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Renders transfer events.
pub struct TransferProgress {
    view: View,
    printer: Printer,
    started: Instant,
}

enum View {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<Digest, ProgressBar>>,
    },
    Lines,
    Json {
        last: Mutex<HashMap<Digest, Instant>>,
    },
    /// `--progress quiet`: nothing.
    Quiet,
}

/// `sha256:0123456789ab…` shortened as docker does: 12 hex digits.
fn short(d: &Digest) -> &str {
    &d.digest()[..12.min(d.digest().len())]
}

fn kind_name(k: BlobKind) -> &'static str {
    match k {
        BlobKind::Layer => "layer",
        BlobKind::Config => "config",
        BlobKind::Manifest => "manifest",
    }
}

impl TransferProgress {
    /// A renderer for `mode` (`auto`: bars when stderr is a terminal).
    pub fn new(mode: ProgressMode, printer: Printer) -> Self {
        let view = match mode {
            ProgressMode::Json => View::Json {
                last: Mutex::default(),
            },
            ProgressMode::Plain => View::Lines,
            ProgressMode::Quiet => View::Quiet,
            ProgressMode::Auto if !printer.stderr_is_tty() => View::Lines,
            ProgressMode::Auto | ProgressMode::Tty => View::Bars {
                multi: MultiProgress::with_draw_target(printer.progress_target()),
                bars: Mutex::default(),
            },
        };
        TransferProgress {
            view,
            printer,
            started: Instant::now(),
        }
    }

    /// Time since the transfer started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the live view and prints the summary: `line` for people, `fields` for JSON.
    pub fn finish(&self, line: &str, mut fields: serde_json::Value) {
        match &self.view {
            View::Json { .. } => {
                fields["event"] = json!("summary");
                fields["seconds"] = json!(self.elapsed().as_secs_f64());
                self.printer.out(fields);
            }
            View::Bars { multi, bars } => {
                for bar in bars.lock().expect("progress lock").values() {
                    bar.finish();
                }
                let _ = multi.clear();
                self.printer.note(line);
            }
            View::Lines => self.printer.note(line),
            View::Quiet => {}
        }
    }

    /// A line for people, above the bars when there are bars.
    fn line(&self, text: String) {
        match &self.view {
            View::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
            _ => self.printer.note(text),
        }
    }

    fn bar(&self, digest: &Digest, kind: BlobKind, size: u64) -> Option<ProgressBar> {
        let View::Bars { multi, bars } = &self.view else {
            return None;
        };
        let mut bars = bars.lock().expect("progress lock");
        let bar = bars.entry(digest.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(format!("{} {:<6}", short(digest), kind_name(kind)));
            bar
        });
        Some(bar.clone())
    }

    fn json(&self, value: serde_json::Value) {
        self.printer.out(value);
    }
}

impl Reporter for TransferProgress {
    fn report(&self, event: Event) {
        match (&self.view, event) {
            (View::Quiet, _) => {}
            (
                View::Json { .. },
                Event::Resolved {
                    reference,
                    manifest,
                    platform,
                },
            ) => {
                self.json(json!({"event": "resolved", "reference": reference, "manifest": manifest.to_string(), "platform": platform}));
            }
            (
                _,
                Event::Resolved {
                    reference,
                    manifest,
                    platform,
                },
            ) => {
                let on = platform.map(|p| format!(" ({p})")).unwrap_or_default();
                self.line(format!("{reference}{on}: manifest {manifest}"));
            }
            (
                View::Json { .. },
                Event::BlobStarted {
                    digest,
                    kind,
                    size,
                    resumed_at,
                },
            ) => {
                self.json(json!({"event": "start", "digest": digest.to_string(), "kind": kind_name(kind), "size": size, "resumed_at": resumed_at}));
            }
            (
                View::Lines,
                Event::BlobStarted {
                    digest,
                    kind,
                    size,
                    resumed_at,
                },
            ) => {
                let resumed = if resumed_at > 0 {
                    format!(", resuming at {}", human_size(resumed_at))
                } else {
                    String::new()
                };
                self.line(format!(
                    "{} {}: {} ({}{resumed})",
                    short(&digest),
                    kind_name(kind),
                    "transferring",
                    human_size(size)
                ));
            }
            (
                View::Bars { .. },
                Event::BlobStarted {
                    digest,
                    kind,
                    size,
                    resumed_at,
                },
            ) => {
                if let Some(bar) = self.bar(&digest, kind, size) {
                    bar.set_position(resumed_at);
                }
            }
            (
                View::Json { last },
                Event::BlobProgress {
                    digest,
                    done,
                    total,
                },
            ) => {
                let now = Instant::now();
                let mut last = last.lock().expect("progress lock");
                let due = last
                    .get(&digest)
                    .is_none_or(|t| now.duration_since(*t) >= JSON_PROGRESS_EVERY);
                if due || done == total {
                    last.insert(digest.clone(), now);
                    drop(last);
                    self.json(json!({"event": "progress", "digest": digest.to_string(), "done": done, "total": total}));
                }
            }
            (
                View::Bars { .. },
                Event::BlobProgress {
                    digest,
                    done,
                    total,
                },
            ) => {
                if let Some(bar) = self.bar(&digest, BlobKind::Layer, total) {
                    bar.set_position(done);
                }
            }
            (View::Lines, Event::BlobProgress { .. }) => {}
            (
                View::Json { .. },
                Event::BlobSkipped {
                    digest,
                    kind,
                    size,
                    why,
                },
            ) => {
                let (reason, from) = match why {
                    Skipped::AlreadyExists => ("exists", None),
                    Skipped::Mounted { from } => ("mounted", Some(from)),
                };
                self.json(json!({"event": "skip", "digest": digest.to_string(), "kind": kind_name(kind), "size": size, "reason": reason, "from": from}));
            }
            (
                _,
                Event::BlobSkipped {
                    digest,
                    kind,
                    size,
                    why,
                },
            ) => {
                let why = match why {
                    Skipped::AlreadyExists => "already exists".to_owned(),
                    Skipped::Mounted { from } => format!("mounted from {from}"),
                };
                match self.bar(&digest, kind, size) {
                    Some(bar) => bar.finish_with_message(why),
                    None => self.line(format!("{} {}: {why}", short(&digest), kind_name(kind))),
                }
            }
            (View::Json { .. }, Event::BlobDone { digest, kind, size }) => {
                self.json(json!({"event": "done", "digest": digest.to_string(), "kind": kind_name(kind), "size": size}));
            }
            (_, Event::BlobDone { digest, kind, size }) => match self.bar(&digest, kind, size) {
                Some(bar) => {
                    bar.set_position(size);
                    bar.finish_with_message("done");
                }
                None => self.line(format!(
                    "{} {}: done ({})",
                    short(&digest),
                    kind_name(kind),
                    human_size(size)
                )),
            },
            (
                View::Json { .. },
                Event::Retrying {
                    what,
                    attempt,
                    delay,
                    reason,
                },
            ) => {
                self.json(json!({"event": "retry", "what": what, "attempt": attempt, "delay_ms": delay.as_millis() as u64, "reason": reason}));
            }
            (
                _,
                Event::Retrying {
                    what,
                    attempt,
                    delay,
                    reason,
                },
            ) => {
                self.line(format!(
                    "{what}: {reason}; trying again in {:.1}s (attempt {})",
                    delay.as_secs_f64(),
                    attempt + 1
                ));
            }
            (View::Json { .. }, Event::Warning(message)) => {
                self.json(json!({"event": "warning", "message": message}));
            }
            (_, Event::Warning(message)) => self.line(format!("warning: {message}")),
        }
    }
}
