//! The pure front end on its own, for bench/frontend.sh:
//!
//! ```text
//! frontend_bench dockerignore PATTERNS PATHS [ROUNDS]  # check every path of PATHS (one a line)
//! frontend_bench parse DOCKERFILE [ROUNDS]             # parse and plan a Dockerfile
//! ```
//! Each prints one line: the median time of a round and what a round did.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use builder::dockerfile::parse;
use builder::dockerignore::Dockerignore;
use builder::plan::{PlanOptions, Platform, plan};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn rounds(arg: Option<&String>) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(arg.map(|r| r.parse()).transpose()?.unwrap_or(21))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dockerignore") if args.len() >= 3 => {
            let patterns = std::fs::read_to_string(&args[1])?;
            let paths = std::fs::read_to_string(&args[2])?;
            let paths: Vec<&str> = paths.lines().collect();
            let mut times = Vec::new();
            let mut excluded = 0;
            for _ in 0..rounds(args.get(3))? {
                let start = Instant::now();
                let matcher = Dockerignore::parse(&patterns)?;
                excluded = paths.iter().filter(|p| matcher.is_excluded(p)).count();
                times.push(start.elapsed());
            }
            let m = median(times);
            println!(
                "dockerignore: {} paths, {excluded} excluded, {:.1} ms a round, {:.0} ns a path",
                paths.len(),
                m.as_secs_f64() * 1e3,
                m.as_secs_f64() * 1e9 / paths.len() as f64
            );
        }
        Some("parse") if args.len() >= 2 => {
            let text = std::fs::read_to_string(&args[1])?;
            let build_args = BTreeMap::new();
            let options = PlanOptions {
                target: None,
                build_args: &build_args,
                platform: Platform::host(),
                image_contexts: &[],
            };
            let mut times = Vec::new();
            let mut stages = 0;
            for _ in 0..rounds(args.get(2))? {
                let start = Instant::now();
                let df = parse(&text)?;
                stages = plan(&df, &options)?.build_order().count();
                times.push(start.elapsed());
            }
            println!(
                "parse+plan: {} lines, {stages} stages to build, {:.1} µs",
                text.lines().count(),
                median(times).as_secs_f64() * 1e6
            );
        }
        _ => return Err("usage: frontend_bench dockerignore PATTERNS PATHS [ROUNDS] | parse DOCKERFILE [ROUNDS]".into()),
    }
    Ok(())
}
