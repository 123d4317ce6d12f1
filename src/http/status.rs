//! `/status`: one HTML page for operations, rendered on the server. No
//! script: the chart is inline SVG, the rest plain tables.
//!
//! It shows the health, the table in force (when it was loaded and the
//! last reload error), each pod with its members and clients, relayed
//! messages per pod per day over the last [`DAYS`] days (from the
//! journal), the first-response median and 90th percentile per pod and
//! the threads waiting for a first reply, what is held and why, and the
//! last [`RECENT`] decisions.
//! Every text from the table or the journal is HTML-escaped; message
//! bodies are never shown (the journal has none).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::config::Pod;
use crate::metrics::TableState;
use crate::ops::stats::{self, DayCount, WaitingThread};
use crate::ops::{log::Filter, show_time, Entry, OpsError, Reader};

/// Days in the chart: 8 weeks.
pub const DAYS: usize = 56;

/// Decisions in the list of recent ones.
pub const RECENT: usize = 50;

/// Held messages listed at most.
const HELD_MAX: usize = 200;

/// Clients listed per pod at most (a table can have 100,000).
const CLIENTS_MAX: usize = 40;

/// Bar colours, one per pod in table order (repeated past eight pods).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// What the page reads from the journal.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    /// The chart's days, `YYYY-MM-DD`, oldest first.
    pub days: Vec<String>,
    /// Relays per day and pod within `days`.
    pub daily: Vec<DayCount>,
    /// The newest decisions, newest first.
    pub recent: Vec<Entry>,
    /// What the journal filed in the hold folder and has not seen since.
    pub held: Vec<Entry>,
    /// First-response times (pod, milliseconds) of the threads opened
    /// within `days`.
    pub answered: Vec<(String, u64)>,
    /// Threads waiting for a first reply, oldest first.
    pub waiting: Vec<WaitingThread>,
}

impl Journal {
    /// Reads what the page shows, as of `now`.
    pub fn read(r: &Reader, hold_folder: &str, now: SystemTime) -> Result<Journal, OpsError> {
        let days = days_up_to(now, DAYS);
        let daily = r.daily_relays(&days[0])?;
        let recent = r.log(&Filter {
            limit: RECENT,
            ..Filter::default()
        })?;
        let held = r.held(hold_folder, HELD_MAX)?;
        let answered = r.first_responses(&days[0])?;
        let waiting = r.waiting_threads()?;
        Ok(Journal {
            days,
            daily,
            recent,
            held,
            answered,
            waiting,
        })
    }
}

/// The `n` days up to and including the day of `now`, oldest first.
fn days_up_to(now: SystemTime, n: usize) -> Vec<String> {
    (0..n as u64)
        .rev()
        .map(|back| {
            let at = crate::journal::ago(now, Duration::from_secs(back * 86_400));
            humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
        })
        .collect()
}

/// Everything the page shows.
pub struct Page<'a> {
    /// When the page was made.
    pub now: SystemTime,
    /// The table in force.
    pub table: &'a TableState,
    /// What `/healthz` would answer.
    pub health: Result<(), String>,
    /// The journal's part, or why it could not be read.
    pub journal: Result<Journal, String>,
}

impl Page<'_> {
    /// The HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        out.push_str(HEAD);
        let _ = self.write_body(&mut out);
        out.push_str("</body>\n</html>\n");
        out
    }

    fn write_body(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "<h1>podrouter</h1>\n<p class=\"when\">as of {} UTC</p>",
            esc(&show_time(&rfc3339(self.now)))
        )?;
        self.write_health(out)?;
        self.write_table(out)?;
        self.write_pods(out)?;
        match &self.journal {
            Ok(j) => {
                write_chart(out, j, &pod_keys(self.table, j))?;
                write_responses(out, self.table, j)?;
                write_held(out, &j.held)?;
                write_recent(out, &j.recent)?;
            }
            Err(e) => writeln!(
                out,
                "<section id=\"journal\"><h2>Journal</h2><p class=\"bad\">cannot read the \
                 journal: {}</p></section>",
                esc(e)
            )?,
        }
        Ok(())
    }

    fn write_health(&self, out: &mut String) -> std::fmt::Result {
        match &self.health {
            Ok(()) => writeln!(
                out,
                "<p id=\"health\" class=\"ok\">Healthy: the inbox is connected and \
                 recently polled, and the relay answers.</p>"
            ),
            Err(why) => writeln!(
                out,
                "<p id=\"health\" class=\"bad\">Not healthy: {}</p>",
                esc(why)
            ),
        }
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let t = self.table;
        let c = &t.config;
        writeln!(
            out,
            "<section id=\"config\"><h2>Routing table</h2>\n<p>{} loaded {} UTC: \
             {} pods, {} clients.</p>",
            esc(&c.path.display().to_string()),
            esc(&show_time(&rfc3339(t.loaded_at))),
            c.pods.len(),
            c.clients.len()
        )?;
        match &t.reload_error {
            None => writeln!(out, "<p>No reload has failed since.</p>")?,
            Some((at, why)) => writeln!(
                out,
                "<p class=\"bad\">The reload at {} UTC was refused; the table above \
                 keeps routing:</p>\n<pre>{}</pre>",
                esc(&show_time(&rfc3339(*at))),
                esc(why)
            )?,
        }
        writeln!(out, "</section>")
    }

    fn write_pods(&self, out: &mut String) -> std::fmt::Result {
        let config = &self.table.config;
        let mut clients: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in config.clients.values() {
            clients.entry(c.pod.as_str()).or_default().push(&c.name);
        }
        writeln!(
            out,
            "<section id=\"pods\"><h2>Pods</h2>\n<table>\n<tr><th>Pod</th><th>Members</th>\
             <th>Clients</th></tr>"
        )?;
        for (n, pod) in config.pods.values().enumerate() {
            let names = clients.get(pod.key.as_str()).map_or(&[][..], Vec::as_slice);
            write_pod(out, pod, COLOURS[n % COLOURS.len()], names)?;
        }
        if let Some(default) = &config.default_pod {
            writeln!(
                out,
                "<tr><td colspan=\"3\">Mail no client matches goes to pod <b>{}</b>.</td></tr>",
                esc(default)
            )?;
        }
        writeln!(out, "</table></section>")
    }
}

/// One row of the pods table.
fn write_pod(out: &mut String, pod: &Pod, colour: &str, clients: &[&str]) -> std::fmt::Result {
    let members: Vec<String> = pod
        .members
        .iter()
        .map(|m| match &m.name {
            Some(name) => format!("{} &lt;{}&gt;", esc(name), esc(&m.address)),
            None => esc(&m.address),
        })
        .collect();
    let mut shown: Vec<String> = clients.iter().take(CLIENTS_MAX).map(|c| esc(c)).collect();
    if clients.len() > CLIENTS_MAX {
        shown.push(format!("and {} more", clients.len() - CLIENTS_MAX));
    }
    if shown.is_empty() {
        shown.push("(none)".to_owned());
    }
    writeln!(
        out,
        "<tr class=\"pod\"><td><span class=\"swatch\" style=\"background:{colour}\"></span>\
         <b>{}</b><br><code>{}</code></td><td class=\"members\">{}</td><td>{}</td></tr>",
        esc(&pod.name),
        esc(&pod.key),
        members.join("<br>"),
        shown.join(", ")
    )
}

/// The pods of the chart: the table's, then any others the journal names.
fn pod_keys(table: &TableState, journal: &Journal) -> Vec<String> {
    let mut keys: Vec<String> = table.config.pods.keys().cloned().collect();
    for d in &journal.daily {
        if !keys.contains(&d.pod) {
            keys.push(d.pod.clone());
        }
    }
    keys
}

/// Geometry of the chart, in SVG user units.
const BAR: usize = 12;
const LEFT: usize = 44;
const TOP: usize = 12;
const PLOT_HEIGHT: usize = 200;
const BOTTOM: usize = 40;

/// The stacked bar chart: relays per day, one colour per pod.
fn write_chart(out: &mut String, j: &Journal, pods: &[String]) -> std::fmt::Result {
    // counts[day][pod]
    let mut counts = vec![vec![0u64; pods.len()]; j.days.len()];
    for d in &j.daily {
        let day = j.days.iter().position(|x| *x == d.day);
        let pod = pods.iter().position(|p| *p == d.pod);
        if let (Some(day), Some(pod)) = (day, pod) {
            counts[day][pod] += d.count;
        }
    }
    let total: u64 = counts.iter().flatten().sum();
    let peak = counts.iter().map(|c| c.iter().sum()).max().unwrap_or(0);
    let step = tick_step(peak);
    let top = peak.div_ceil(step).max(1) * step;
    let width = LEFT + BAR * j.days.len() + 10;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let y = |v: u64| TOP as f64 + PLOT_HEIGHT as f64 * (1.0 - v as f64 / top as f64);

    writeln!(
        out,
        "<section id=\"chart\"><h2>Relayed messages per pod and day, last {} weeks</h2>\n\
         <p>{total} relayed in {} days (UTC; only mail the relay accepted).</p>",
        j.days.len() / 7,
        j.days.len()
    )?;
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"daily-chart\" role=\"img\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n\
         <title>Relayed messages per pod and day</title>"
    )?;
    // Grid lines and their labels.
    let mut v = 0;
    while v <= top {
        let yv = y(v);
        writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{v}</text>",
            width - 10,
            LEFT - 4,
            yv + 4.0
        )?;
        v += step;
    }
    // One stack of bars per day; a label under every seventh day.
    for (d, (day, per_pod)) in j.days.iter().zip(&counts).enumerate() {
        let x = LEFT + d * BAR + 1;
        let mut base = 0u64;
        for (p, n) in per_pod.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (y0, y1) = (y(base + n), y(base));
            writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y0:.1}\" width=\"{}\" height=\"{:.1}\" fill=\"{}\" \
                 data-pod=\"{}\"><title>{} {}: {n}</title></rect>",
                BAR - 2,
                y1 - y0,
                COLOURS[p % COLOURS.len()],
                esc(&pods[p]),
                esc(day),
                esc(&pods[p])
            )?;
            base += n;
        }
        if d % 7 == 0 {
            writeln!(
                out,
                "<text x=\"{x}\" y=\"{}\" class=\"axis\">{}</text>",
                TOP + PLOT_HEIGHT + 14,
                esc(day.get(5..).unwrap_or(day))
            )?;
        }
    }
    // The legend, under the axis.
    let mut lx = LEFT;
    for (p, pod) in pods.iter().enumerate() {
        let ly = TOP + PLOT_HEIGHT + 26;
        writeln!(
            out,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>",
            COLOURS[p % COLOURS.len()],
            lx + 14,
            ly + 9,
            esc(pod)
        )?;
        lx += 24 + 7 * pod.chars().count().min(30);
    }
    writeln!(out, "</svg></section>")
}

/// A step for the y axis (1, 2 or 5 times a power of ten) giving at most
/// five grid lines above zero.
fn tick_step(peak: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = base.saturating_mul(m);
            if peak.div_ceil(step) <= 5 {
                return step;
            }
        }
        base = base.saturating_mul(10);
    }
}

/// First-response times per pod and the threads waiting.
fn write_responses(out: &mut String, table: &TableState, j: &Journal) -> std::fmt::Result {
    let pods: Vec<String> = table.config.pods.keys().cloned().collect();
    let rows = stats::responses(&pods, &j.answered, &j.waiting);
    writeln!(
        out,
        "<section id=\"responses\"><h2>First response</h2>\n\
         <p>Threads opened in the last {} days; nearest-rank percentiles.</p>\n<table>\n\
         <tr><th>Pod</th><th>Answered</th><th>Median</th><th>p90</th><th>Waiting</th></tr>",
        DAYS
    )?;
    for r in &rows {
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.pod),
            r.answered,
            esc(&stats::took(r.median_ms)),
            esc(&stats::took(r.p90_ms)),
            r.waiting
        )?;
    }
    writeln!(out, "</table>")?;
    if j.waiting.is_empty() {
        return writeln!(out, "<p>No thread waits for a first reply.</p></section>");
    }
    writeln!(
        out,
        "<h3>Waiting for a first reply ({})</h3>\n<table>\n\
         <tr><th>Opened (UTC)</th><th>Pod</th><th>Sender</th><th>Subject</th>\
         <th>Escalated</th></tr>",
        j.waiting.len()
    )?;
    for w in j.waiting.iter().take(RECENT) {
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&show_time(&w.opened_at)),
            esc(&w.pod),
            opt(w.sender.as_deref()),
            opt(w.subject.as_deref()),
            if w.escalated { "yes" } else { "no" }
        )?;
    }
    writeln!(out, "</table></section>")
}

/// What is held, and why.
fn write_held(out: &mut String, held: &[Entry]) -> std::fmt::Result {
    writeln!(
        out,
        "<section id=\"held\"><h2>Held ({}{})</h2>",
        held.len(),
        if held.len() >= HELD_MAX { "+" } else { "" }
    )?;
    if held.is_empty() {
        return writeln!(out, "<p>Nothing is held.</p></section>");
    }
    writeln!(
        out,
        "<p><code>podrouter held</code> lists them with their UIDs; \
         <code>podrouter release UID --pod P</code> relays one.</p>\n<table>\n\
         <tr><th>Entry</th><th>Time (UTC)</th><th>Sender</th><th>Subject</th>\
         <th>Reason</th></tr>"
    )?;
    for e in held {
        writeln!(
            out,
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.id,
            esc(&show_time(&e.first_seen)),
            opt(e.sender.as_deref()),
            opt(e.subject.as_deref()),
            esc(&e.reason)
        )?;
    }
    writeln!(out, "</table></section>")
}

/// The newest decisions.
fn write_recent(out: &mut String, recent: &[Entry]) -> std::fmt::Result {
    writeln!(
        out,
        "<section id=\"decisions\"><h2>Last {} decisions</h2>\n<table>\n\
         <tr><th>Time (UTC)</th><th>Sender</th><th>Client</th><th>Pod</th><th>Action</th>\
         <th>Reason</th><th>Subject</th></tr>",
        RECENT
    )?;
    for e in recent {
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"action {}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&show_time(&e.first_seen)),
            opt(e.sender.as_deref()),
            opt(e.client.as_deref()),
            opt(e.pod.as_deref()),
            action_class(&e.action),
            esc(&e.shown_action()),
            esc(&e.reason),
            opt(e.subject.as_deref())
        )?;
    }
    if recent.is_empty() {
        writeln!(out, "<tr><td colspan=\"7\">No decisions yet.</td></tr>")?;
    }
    writeln!(out, "</table></section>")
}

/// A CSS class for an action (the journal only has these three).
fn action_class(action: &str) -> &'static str {
    match action {
        "relay" => "relay",
        "skip" => "skip",
        _ => "hold",
    }
}

/// An optional value, escaped, or `-`.
fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), esc)
}

/// A time as the journal writes it (RFC 3339, UTC).
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Text made safe for HTML content and attribute values; control
/// characters become spaces.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The document's head and the style of the page.
const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>podrouter status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.when { color: #666; margin-top: 0; }
.ok { color: #186a18; font-weight: bold; }
.bad { color: #b00; font-weight: bold; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: 3px 8px; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
.action.relay { color: #186a18; }
.action.hold { color: #b00; }
.action.skip { color: #666; }
svg .grid { stroke: #ddd; }
svg .axis, svg .legend { font: 11px sans-serif; fill: #444; }
pre { background: #fff4f4; padding: 6px; white-space: pre-wrap; }
</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn table() -> TableState {
        let text = r#"
[pods.east]
name = "East <pod>"
members = ["Ana Ruiz <ana@vendor.example>", "ben@vendor.example"]
[pods.west]
members = ["cara@vendor.example"]
[clients.acme]
name = "Acme & Sons"
pod = "east"
domains = ["acme.example"]
"#;
        TableState {
            config: Arc::new(
                crate::config::from_str(text, std::path::Path::new("t.toml")).unwrap(),
            ),
            loaded_at: SystemTime::UNIX_EPOCH,
            reload_error: Some((SystemTime::UNIX_EPOCH, "t.toml:3:1: <bad>".into())),
        }
    }

    fn entry(subject: &str, action: &str) -> Entry {
        Entry {
            id: 7,
            sender: Some("clerk@acme.example".into()),
            client: Some("acme".into()),
            pod: Some("east".into()),
            action: action.into(),
            reason: "domain acme.example".into(),
            subject: Some(subject.into()),
            first_seen: "2026-12-01T10:00:00.000Z".into(),
            ..Entry::default()
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_draws_the_chart() {
        let now = humantime::parse_rfc3339("2026-12-03T12:00:00Z").unwrap();
        let days = days_up_to(now, DAYS);
        assert_eq!(days.len(), 56);
        assert_eq!(days[55], "2026-12-03");
        assert_eq!(days[0], "2026-10-09");
        let journal = Journal {
            daily: vec![
                DayCount {
                    day: "2026-12-01".into(),
                    pod: "east".into(),
                    count: 7,
                },
                DayCount {
                    day: "2026-12-01".into(),
                    pod: "west".into(),
                    count: 3,
                },
            ],
            days,
            recent: vec![entry("<script>alert(1)</script>", "relay")],
            held: vec![entry("Who am I?", "hold")],
            answered: vec![("east".into(), 90_000), ("east".into(), 600_000)],
            waiting: vec![WaitingThread {
                opened_at: "2026-12-03T09:00:00.000Z".into(),
                pod: "west".into(),
                sender: Some("clerk@acme.example".into()),
                subject: Some("<b>Printer</b>".into()),
                escalated: false,
            }],
        };
        let table = table();
        let html = Page {
            now,
            table: &table,
            health: Err("relay did not answer <x>".into()),
            journal: Ok(journal),
        }
        .render();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("East &lt;pod&gt;"));
        assert!(html.contains("Ana Ruiz &lt;ana@vendor.example&gt;"));
        assert!(html.contains("Acme &amp; Sons"));
        assert!(html.contains("relay did not answer &lt;x&gt;"));
        assert!(html.contains("&lt;bad&gt;"));
        assert!(html.contains("<svg"));
        assert!(html.contains("<tr><td>east</td><td>2</td><td>1m 30s</td><td>10m</td>"));
        assert!(html.contains("Waiting for a first reply (1)"));
        assert!(html.contains("&lt;b&gt;Printer&lt;/b&gt;"));
        assert_eq!(
            html.matches("<rect x=").count(),
            2 + 2,
            "two bars, two legend keys"
        );
        assert!(html.contains("<title>2026-12-01 east: 7</title>"));
        assert!(html.contains("Held (1)"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(0), 1);
        assert_eq!(tick_step(5), 1);
        assert_eq!(tick_step(7), 2);
        assert_eq!(tick_step(23), 5);
        assert_eq!(tick_step(480), 100);
        assert_eq!(tick_step(u64::MAX), 5 * 10u64.pow(18));
    }
}
