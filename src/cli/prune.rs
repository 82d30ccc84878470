//! `berth images`, `berth rmi` and `berth prune`: what the image store holds, and making it
//! smaller.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use berth::image::{Images, PruneError, PruneLimits, Removed};
use berth::job::Settings;

use super::print;
use super::status::status;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove images, least recently used first, until the store holds at most SIZE
    /// (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Remove every image not used (pulled or run) for longer than DURATION (e.g. 7d, 12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

fn open(settings: &Settings) -> anyhow::Result<Images> {
    Images::open(&settings.cache).context("cannot open the image cache")
}

pub fn rmi(settings: &Settings, image: &str, json: bool) -> anyhow::Result<ExitCode> {
    let images = open(settings)?;
    // What dead berths left counts for nothing rmi reports, as before.
    images.sweep_leftovers();
    report(images.remove(image), json)
}

pub fn prune(settings: &Settings, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let limits = PruneLimits {
        max_size: args.max_size,
        older_than: args.older_than,
    };
    report(open(settings)?.prune(limits), args.json)
}

fn report(result: Result<Removed, PruneError>, json: bool) -> anyhow::Result<ExitCode> {
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

/// Parses `500M`, `2G`, `1024` (bytes; K, M, G, T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let shift = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M, G or T)")),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 500M or 2G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `7d`, `12h`, `30m`, `45s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration such as 7d, 12h, 30m or 45s");
    let unit = s.chars().last().ok_or_else(bad)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("5X").unwrap_err().contains("unit"));
        assert!(parse_size("M").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("").is_err());
    }
}
