//! `podrouter log`: the routing decisions in the journal, newest first,
//! as an aligned table or one JSON object per line.

use std::io::Write;

use serde_json::json;

use super::{clip, or_dash, printable, show_time, write_columns, Entry, OpsError, Reader};

/// How wide the reason and subject columns may grow in the table.
const REASON_WIDTH: usize = 48;
const SUBJECT_WIDTH: usize = 60;

/// Which rows `log` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only rows first seen at or after this journal time.
    pub since: Option<String>,
    /// Only this pod.
    pub pod: Option<String>,
    /// Only this client.
    pub client: Option<String>,
    /// Only this action (`relay`, `skip`, `hold`).
    pub action: Option<String>,
    /// At most this many rows; 0 for all.
    pub limit: usize,
}

impl Reader {
    /// The decisions matching `filter`, newest first.
    pub fn log(&self, filter: &Filter) -> Result<Vec<Entry>, OpsError> {
        self.entries(
            "(?1 IS NULL OR first_seen >= ?1) AND (?2 IS NULL OR pod = ?2) \
             AND (?3 IS NULL OR client = ?3) AND (?4 IS NULL OR action = ?4)",
            "first_seen DESC, id DESC",
            filter.limit,
            &[&filter.since, &filter.pod, &filter.client, &filter.action],
        )
    }
}

/// One decision as the JSON object `log --json` prints.
pub fn entry_json(e: &Entry) -> serde_json::Value {
    json!({
        "time": e.first_seen,
        "sender": e.sender,
        "client": e.client,
        "pod": e.pod,
        "action": e.action,
        "reason": e.reason,
        "subject": e.subject,
        "message_id": e.message_id,
        "folder": e.folder,
        "state": e.state,
    })
}

/// Writes one JSON object per line.
pub fn write_json(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries {
        writeln!(out, "{}", entry_json(e))?;
    }
    Ok(())
}

/// Writes the decisions as a table with a header line.
pub fn write_table(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    let header = [
        "TIME (UTC)",
        "SENDER",
        "CLIENT",
        "POD",
        "ACTION",
        "REASON",
        "SUBJECT",
    ];
    let rows: Vec<Vec<String>> = entries.iter().map(cells).collect();
    write_columns(out, &header, &rows)
}

/// The table cells of one row.
fn cells(e: &Entry) -> Vec<String> {
    vec![
        show_time(&e.first_seen),
        or_dash(e.sender.as_deref()),
        or_dash(e.client.as_deref()),
        or_dash(e.pod.as_deref()),
        e.shown_action(),
        clip(&printable(&e.reason), REASON_WIDTH),
        clip(&or_dash(e.subject.as_deref()), SUBJECT_WIDTH),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{journal, Row};

    fn sample(dir: &std::path::Path) {
        let row = |client, pod, action, time| Row {
            sender: Some("clerk@town.example"),
            client,
            pod,
            action,
            reason: "because",
            subject: Some("Printer"),
            first_seen: time,
            ..Default::default()
        };
        journal(
            dir,
            &[
                row(
                    Some("sunnyvale"),
                    Some("alberta"),
                    "relay",
                    "2026-12-01T08:00:00.000Z",
                ),
                row(None, None, "hold", "2026-12-01T09:00:00.000Z"),
                row(
                    Some("tofino-bay"),
                    Some("coast"),
                    "relay",
                    "2026-12-02T08:00:00.000Z",
                ),
                row(
                    Some("sunnyvale"),
                    Some("alberta"),
                    "skip",
                    "2026-12-03T08:00:00.000Z",
                ),
            ],
        );
    }

    fn times(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| &e.first_seen[..10]).collect()
    }

    #[test]
    fn newest_first_with_filters_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let r = Reader::open(dir.path()).unwrap();
        let all = r.log(&Filter::default()).unwrap();
        assert_eq!(
            times(&all),
            ["2026-12-03", "2026-12-02", "2026-12-01", "2026-12-01"]
        );
        assert_eq!(all[2].action, "hold");

        let f = |f: Filter| r.log(&f).unwrap();
        let pod = f(Filter {
            pod: Some("alberta".into()),
            ..Default::default()
        });
        assert_eq!(times(&pod), ["2026-12-03", "2026-12-01"]);
        let relays = f(Filter {
            action: Some("relay".into()),
            client: Some("sunnyvale".into()),
            ..Default::default()
        });
        assert_eq!(relays.len(), 1);
        let recent = f(Filter {
            since: Some("2026-12-02T00:00:00.000Z".into()),
            ..Default::default()
        });
        assert_eq!(times(&recent), ["2026-12-03", "2026-12-02"]);
        let limited = f(Filter {
            limit: 1,
            ..Default::default()
        });
        assert_eq!(times(&limited), ["2026-12-03"]);
    }

    #[test]
    fn table_and_json_output() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let entries = Reader::open(dir.path())
            .unwrap()
            .log(&Filter::default())
            .unwrap();
        let mut table = Vec::new();
        write_table(&mut table, &entries).unwrap();
        let table = String::from_utf8(table).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("TIME (UTC)           SENDER  "),
            "{table}"
        );
        assert!(lines[1].starts_with("2026-12-03 08:00:00  clerk@town.example  sunnyvale"));
        assert!(lines[3].contains("  -  "), "{table}");
        let mut out = Vec::new();
        write_json(&mut out, &entries[..1]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["action"], "skip");
        assert_eq!(v["time"], "2026-12-03T08:00:00.000Z");
        assert_eq!(v["folder"], serde_json::Value::Null);
    }
}
