//! Times on the command line (`--since 2024-05-01`, `--since 7d`) and in the report (UTC,
//! RFC 3339), without a calendar crate: days from the civil date and back (H. Hinnant's
//! algorithms).

use crate::units::parse_duration;

/// Earliest time InfluxDB stores (`models.MinNanoTime`).
pub const MIN_TIME: i64 = i64::MIN + 2;
/// Latest time InfluxDB stores (`models.MaxNanoTime`).
pub const MAX_TIME: i64 = i64::MAX - 1;

const NANOS_PER_SEC: i64 = 1_000_000_000;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2024-05-01T12:00:00Z` (fractional seconds shown only when there are any).
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(NANOS_PER_SEC);
    let frac = ns.rem_euclid(NANOS_PER_SEC);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    );
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// A length of time in the largest whole unit (`7d`, `1h`, `225s`, `1500ms`).
pub fn format_span(ns: i64) -> String {
    for (unit, size) in [
        ("d", 86_400 * NANOS_PER_SEC),
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1000),
    ] {
        if ns >= size && ns % size == 0 {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

fn number(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Reads an RFC 3339 time in UTC (`2024-05-01T12:00:00Z`, fractional seconds allowed) or a
/// date (`2024-05-01`, midnight UTC).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d).checked_mul(86_400)?;
    let mut nanos = 0;
    if let Some(t) = time {
        let t = t.strip_suffix(['Z', 'z'])?;
        let (hms, frac) = match t.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (t, None),
        };
        let mut parts = hms.splitn(3, ':');
        let (h, mi, se) = (
            number(parts.next()?)?,
            number(parts.next()?)?,
            number(parts.next()?)?,
        );
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 9 {
                return None;
            }
            nanos = number(f)? * 10_i64.pow(9 - f.len() as u32);
        }
    }
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Reads a `--since`/`--until` value: an RFC 3339 time or date in UTC, a duration before
/// `now_ns` (`7d`, `12h`), or nanoseconds since the epoch.
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(d) = parse_duration(s) {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now_ns.saturating_sub(ns).max(MIN_TIME));
    }
    Err(format!(
        "{s:?} is not a time: give an RFC 3339 time (2024-05-01T00:00:00Z), a date (2024-05-01), \
         a duration before now (7d, 12h) or nanoseconds since the epoch"
    ))
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
