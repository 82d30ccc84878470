//! `berth images`, `berth rmi` and `berth prune`: what the image store holds, and making it
//! smaller.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use berth::image::prune::{PruneLimits, Removed, parse_duration, parse_size};
use berth::image::{Images, Unpacking};
use berth::job::Settings;

use super::{print, status};

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove images, least recently used first, until the store holds at most SIZE
    /// (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Remove every image not used (pulled or run) for longer than DURATION (e.g. 7d, 12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

fn open(settings: &Settings) -> anyhow::Result<Images> {
    // Nothing is unpacked here: how it would be is of no matter.
    Images::open(
        &settings.cache,
        settings.registry.clone(),
        Unpacking::new(false, None),
    )
    .context("cannot open the image cache")
}

pub fn rmi(settings: &Settings, image: &str, json: bool) -> anyhow::Result<ExitCode> {
    report(open(settings)?.remove(image), json)
}

pub fn prune(settings: &Settings, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let limits = PruneLimits {
        max_size: args.max_size,
        older_than: args.older_than,
    };
    report(open(settings)?.prune(limits), args.json)
}

fn report(
    result: Result<Removed, berth::image::prune::PruneError>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let removed = match result {
        Ok(r) => r,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return Ok(status(e.class()));
        }
    };
    if json {
        print::out(serde_json::to_string_pretty(&removed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let summary = format!(
        "removed {} image(s), {} blob(s), {} unpacked layer(s), {} temporary leftover(s): {} freed",
        removed.images.len(),
        removed.blobs,
        removed.trees,
        removed.temporary,
        berth::util::human_bytes(removed.bytes)
    );
    let lines = removed.images.iter().map(|i| format!("removed {i}"));
    print::lines(lines.chain(std::iter::once(summary)));
    Ok(ExitCode::SUCCESS)
}

/// How long ago `then` (seconds since the epoch) was, shortly; `never` for 0.
pub fn ago(then: u64, now: u64) -> String {
    if then == 0 {
        return "never".to_owned();
    }
    let s = now.saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_shortly() {
        assert_eq!(ago(0, 100), "never");
        assert_eq!(ago(95, 100), "5s ago");
        assert_eq!(ago(100, 100 + 180), "3m ago");
        assert_eq!(ago(100, 100 + 7200), "2h ago");
        assert_eq!(ago(100, 100 + 3 * 86_400), "3d ago");
    }
}
