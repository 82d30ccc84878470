//! Times in mappings and manifests: `changed_since` values in, ISO 8601 out.

use jiff::{SignedDuration, Timestamp, civil};

/// Parses a `changed_since` value other than `adaptive`: a relative time (`-2 days`,
/// `3 hours`, `-1 week`: always in the past), an absolute one (RFC 3339, a date, a date
/// and time in UTC) or unix seconds. Returns unix milliseconds.
pub fn parse_since(value: &str, now_ms: i64) -> Result<i64, String> {
    let v = value.trim();
    if let Some(ms) = parse_relative(v, now_ms) {
        return Ok(ms);
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = v
            .parse()
            .map_err(|_| format!("{value:?} is out of range"))?;
        return secs
            .checked_mul(1000)
            .ok_or_else(|| format!("{value:?} is out of range"));
    }
    if let Ok(ts) = v.parse::<Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(dt) = v.replace(' ', "T").parse::<civil::DateTime>() {
        if let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(z.timestamp().as_millisecond());
        }
    }
    if let Ok(d) = v.parse::<civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(format!(
        "{value:?} is not a time: use e.g. \"-2 days\", \"2024-05-01\", \"2024-05-01T10:00:00Z\" or \"adaptive\""
    ))
}

fn parse_relative(v: &str, now_ms: i64) -> Option<i64> {
    let v = v.strip_suffix(" ago").unwrap_or(v);
    let v = v.trim_start_matches(['-', '+']).trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit = unit.trim().trim_end_matches('s');
    let secs_per: i64 = match unit {
        "second" | "sec" => 1,
        "minute" | "min" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    };
    let back = SignedDuration::from_secs(n.checked_mul(secs_per)?);
    now_ms.checked_sub(i64::try_from(back.as_millis()).ok()?)
}

/// Unix milliseconds as the manifests write times: `2024-05-01T10:00:00+0000`.
pub fn iso(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%z").to_string(),
        Err(_) => String::new(),
    }
}

/// Unix milliseconds with full precision, for berth's own bookkeeping in states.
pub fn iso_ms(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        Err(_) => String::new(),
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn relative_times_are_in_the_past() {
        assert_eq!(parse_since("-2 days", NOW).unwrap(), NOW - 2 * 86_400_000);
        assert_eq!(parse_since("3 hours", NOW).unwrap(), NOW - 3 * 3_600_000);
        assert_eq!(parse_since("-1 week", NOW).unwrap(), NOW - 7 * 86_400_000);
        assert_eq!(parse_since("10 minutes ago", NOW).unwrap(), NOW - 600_000);
    }

    #[test]
    fn absolute_times() {
        assert_eq!(parse_since("2023-11-14T22:13:20Z", NOW).unwrap(), NOW);
        assert_eq!(parse_since("2023-11-14 22:13:20", NOW).unwrap(), NOW);
        assert_eq!(parse_since("1700000000", NOW).unwrap(), NOW);
        assert_eq!(
            parse_since("2023-11-14", NOW).unwrap(),
            NOW - (22 * 3600 + 13 * 60 + 20) * 1000
        );
        assert!(
            parse_since("yesterday-ish", NOW)
                .unwrap_err()
                .contains("yesterday-ish")
        );
    }

    #[test]
    fn formats_like_the_original_runner() {
        assert_eq!(iso(NOW), "2023-11-14T22:13:20+0000");
        assert_eq!(iso_ms(NOW + 5), "2023-11-14T22:13:20.005+00:00");
        assert_eq!(parse_since(&iso_ms(NOW + 5), 0).unwrap(), NOW + 5);
    }
}
