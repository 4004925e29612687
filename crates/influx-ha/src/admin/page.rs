//! `GET /`: the status page for people. Plain HTML and CSS, rendered on the server from the
//! same [`NodeStatus`] as `/status`, refreshing itself every few seconds (meta refresh, no
//! script). Every value from outside (names, URLs, reasons, error texts) is escaped.

use std::fmt::Write as _;
use std::time::Duration;

use super::status::{BackendStatus, NodeStatus, SyncState};

/// Seconds between refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        "< 1s".to_owned()
    } else {
        human_duration(Duration::from_secs(s.round() as u64))
    }
}

/// A duration in its two largest units, as people read it: `3d 4h`, `2m 5s`, `40s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d_, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d_}d"),
        _ => format!("{d_}d {h}h"),
    }
}

/// A byte count rounded to one decimal of its binary unit: `1.5 GiB`, `812 bytes`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, factor) in UNITS {
        if bytes >= factor {
            return format!("{:.1} {name}", bytes as f64 / factor as f64);
        }
    }
    format!("{bytes} bytes")
}

fn rate(r: Option<f64>) -> String {
    match r {
        None => "–".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}/s"),
        Some(v) => format!("{v:.1}/s"),
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1d232a;background:#f6f7f9}
h1{font-size:1.3em;margin:0 0 .4em}h2{font-size:1.05em;margin:1.4em 0 .4em}
.summary{padding:.8em 1em;border-radius:6px;font-size:1.15em;font-weight:600;margin-bottom:.6em}
.summary.ok{background:#dff3e4;color:#14532d;border:1px solid #86c79a}
.summary.bad{background:#fde2e1;color:#7f1d1d;border:1px solid #f19c98}
.summary ul{margin:.4em 0 0 1.2em;padding:0;font-weight:400;font-size:.9em}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.92em}
th,td{border:1px solid #d6dae0;padding:.35em .55em;text-align:left;vertical-align:top}
th{background:#eceff3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;white-space:nowrap;padding:.05em .5em;border-radius:4px;font-weight:600;font-size:.9em}
.up,.in-sync{background:#dff3e4;color:#14532d}.down,.diverged{background:#fde2e1;color:#7f1d1d}
.unknown{background:#eceff3;color:#374151}.catching-up,.maintenance{background:#fff4d6;color:#7c4a03}
.why{color:#6b7280;font-size:.85em}.meta{color:#4b5563;font-size:.9em}
";

/// The page.
pub fn render(s: &NodeStatus) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>influx-ha {}: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&s.node_name),
        if s.summary.ok {
            "all in sync"
        } else {
            "attention"
        }
    );
    let _ = writeln!(h, "<h1>influx-ha {}</h1>", escape(&s.node_name));
    let class = if s.summary.ok { "ok" } else { "bad" };
    let _ = write!(h, "<div id=\"summary\" class=\"summary {class}\">");
    if s.summary.problems.is_empty() {
        let _ = write!(h, "{}", escape(&s.summary.text));
    } else {
        let n = s.summary.problems.len();
        let _ = write!(h, "{n} problem{}<ul>", if n == 1 { "" } else { "s" });
        for p in &s.summary.problems {
            let _ = write!(h, "<li>{}</li>", escape(p));
        }
        let _ = write!(h, "</ul>");
    }
    let _ = writeln!(h, "</div>");
    let free = s
        .data_dir
        .free_bytes
        .map_or_else(|| "unknown".to_owned(), human_size);
    let _ = writeln!(
        h,
        "<p class=\"meta\">version {} · up {} · health: {} · data dir {} ({} free) · refreshes every {REFRESH_SECONDS}s</p>",
        escape(s.version),
        human_duration(Duration::from_secs(s.uptime_seconds)),
        match &s.health.reason {
            None => "accepting writes".to_owned(),
            Some(r) => format!("<b>not accepting writes: {}</b>", escape(r)),
        },
        escape(&s.data_dir.path),
        escape(&free),
    );

    let _ = writeln!(h, "<h2>Backends</h2>");
    let _ = writeln!(
        h,
        "<table id=\"backends\"><tr><th>backend</th><th>reachability</th><th>state</th>\
         <th>queue</th><th>oldest queued</th><th>catch-up</th><th>writes</th><th>errors</th>\
         <th>dead letters</th><th>reads</th><th>last error</th></tr>"
    );
    for b in &s.backends {
        backend_row(&mut h, b);
    }
    let _ = writeln!(h, "</table>");

    let _ = writeln!(h, "<h2>Listeners</h2>");
    let _ = writeln!(
        h,
        "<table id=\"listeners\"><tr><th>kind</th><th>address</th><th>database</th>\
         <th>requests</th><th>lines</th><th>bytes</th><th>refused lines</th><th>failed batches</th><th>notes</th></tr>"
    );
    for l in &s.listeners {
        let notes = match (l.dropped_datagrams, l.open_connections) {
            (Some(d), _) => format!("{d} datagrams dropped"),
            (_, Some(c)) => format!("{c} connections open"),
            _ => String::new(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(l.kind),
            escape(&l.addr),
            escape(l.database.as_deref().unwrap_or("")),
            l.requests
                .map_or_else(String::new, |_| rate(l.requests_per_second)),
            l.lines
                .map_or_else(String::new, |_| rate(l.lines_per_second)),
            l.bytes_per_second
                .map_or_else(String::new, |b| format!("{}/s", human_size(b as u64))),
            l.bad_lines.map_or_else(String::new, |n| n.to_string()),
            l.write_failures.map_or_else(String::new, |n| n.to_string()),
            escape(&notes),
        );
    }
    let _ = writeln!(h, "</table>");
    if let Some(b) = &s.request_bodies {
        let _ = writeln!(
            h,
            "<p class=\"meta\" id=\"bodies\">request bodies in memory: {} of {} · {} requests waited for room · {}</p>",
            escape(&human_size(b.in_flight_bytes)),
            escape(&human_size(b.max_inflight_bytes)),
            b.waited,
            if b.refused == 0 {
                "none refused".to_owned()
            } else {
                format!("<b>{} refused (503)</b>", b.refused)
            },
        );
    }

    if let Some(a) = &s.anti_entropy {
        let last = a.last.as_ref().map_or_else(
            || "no check yet".to_owned(),
            |l| {
                let ago = s.generated_at.saturating_sub(l.at);
                use crate::repair::background::CheckResult;
                let result = if matches!(l.result, CheckResult::Differs | CheckResult::Failed) {
                    format!("<b>{}</b>", l.result.as_str())
                } else {
                    l.result.as_str().to_owned()
                };
                format!(
                    "last check {} ago: {result}: {}",
                    human_duration(Duration::from_secs(ago)),
                    escape(&l.detail)
                )
            },
        );
        let _ = writeln!(
            h,
            "<p class=\"meta\" id=\"anti-entropy\">anti-entropy every {}: {} checks, {} found differences, {} skipped, {} failed, {} points copied · {last}</p>",
            human_duration(Duration::from_secs(a.check_interval_seconds)),
            a.checks,
            a.differed,
            a.skipped,
            a.failed,
            a.points_copied,
        );
    }

    let _ = writeln!(h, "<h2>Peers</h2>");
    if s.peers.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"meta\" id=\"peers\">no peer relays configured</p>"
        );
    } else {
        let _ = writeln!(
            h,
            "<table id=\"peers\"><tr><th>peer</th><th>reachable</th><th>last report</th></tr>"
        );
        for p in &s.peers {
            let last = match p.last_report {
                Some(t) => format!(
                    "{} ago",
                    human_duration(Duration::from_secs(s.generated_at.saturating_sub(t)))
                ),
                None => "never".to_owned(),
            };
            let reachable = match (&p.error, p.reachable) {
                (_, true) => "yes".to_owned(),
                (Some(e), false) => format!("<b>no</b><div class=\"why\">{}</div>", escape(e)),
                (None, false) => "<b>no</b>".to_owned(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{reachable}</td><td>{last}</td></tr>",
                escape(&p.name),
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(
        h,
        "<p class=\"meta\">JSON: <a href=\"/status\">/status</a> · Prometheus: <a href=\"/metrics\">/metrics</a></p>\n</body></html>"
    );
    h
}

fn backend_row(h: &mut String, b: &BackendStatus) {
    let reach = match &b.down_reason {
        Some(why) if b.reachability == "down" => format!(
            "<span class=\"badge down\">down</span><div class=\"why\">{}</div>",
            escape(why)
        ),
        _ => format!(
            "<span class=\"badge {0}\">{0}</span>",
            escape(b.reachability)
        ),
    };
    let state_class = b.sync.label().replace(' ', "-");
    let mut state = format!(
        "<span class=\"badge {state_class}\">{}</span>",
        escape(b.sync.label())
    );
    if b.sync != SyncState::Diverged
        && let Some(why) = &b.diverged_reason
    {
        let _ = write!(
            state,
            " <span class=\"badge diverged\">diverged</span><div class=\"why\">{}</div>",
            escape(why)
        );
    } else if let Some(why) = &b.diverged_reason {
        let _ = write!(state, "<div class=\"why\">{}</div>", escape(why));
    }
    let queue = if b.queue.records == 0 {
        "empty".to_owned()
    } else {
        format!(
            "{} records<br>{}",
            b.queue.records,
            human_size(b.queue.bytes)
        )
    };
    let oldest = b
        .queue
        .oldest_age_seconds
        .map_or_else(|| "–".to_owned(), secs);
    let catch_up = match (b.queue.records, b.catch_up_seconds) {
        (0, _) => "–".to_owned(),
        (_, Some(s)) => format!("about {}", secs(s)),
        (_, None) if b.maintenance => "paused".to_owned(),
        (_, None) if b.reachability == "down" => "waits for the backend".to_owned(),
        (_, None) => "not shrinking".to_owned(),
    };
    let (writes, errors) = match &b.rates {
        Some(r) => (
            rate(Some(r.writes_per_second)),
            rate(Some(r.errors_per_second)),
        ),
        None => ("–".to_owned(), "–".to_owned()),
    };
    let dead = if b.dead_letters.records == 0 {
        "0".to_owned()
    } else {
        format!(
            "<b>{}</b> ({})",
            b.dead_letters.records,
            human_size(b.dead_letters.bytes)
        )
    };
    let reads = match &b.not_fresh_reason {
        None => "served".to_owned(),
        Some(why) => format!("not served<div class=\"why\">{}</div>", escape(why)),
    };
    let _ = writeln!(
        h,
        "<tr class=\"backend\" data-backend=\"{name}\"><td><b>{name}</b><div class=\"why\">{url}</div></td>\
         <td>{reach}</td><td>{state}</td><td class=\"num\">{queue}</td><td class=\"num\">{oldest}</td>\
         <td>{catch_up}</td><td class=\"num\">{writes}</td><td class=\"num\">{errors}</td>\
         <td class=\"num\">{dead}</td><td>{reads}</td><td class=\"why\">{last}</td></tr>",
        name = escape(&b.name),
        url = escape(&b.url),
        last = escape(b.last_error.as_deref().unwrap_or("")),
    );
}
