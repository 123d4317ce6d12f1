//! `podrouter stats`: relayed messages per pod and week, each pod's share,
//! its busiest clients, and a hint of which clients to move between pods
//! to even out the load.
//!
//! Only messages the relay took count (`action = 'relay'` with a relay
//! time), in the week they arrived; weeks start on Monday, UTC.
//! Duplicates are not counted: they are recorded as skips. Nor are pod
//! members' own replies and internal mail relayed to their colleagues
//! (rules `reply` and `internal`): they are the pod's work, not its load.
//!
//! The balance hint is greedy: while the shares of the busiest and the
//! least busy pod differ by more than [`BALANCED_WITHIN`] points, make the
//! one client move that evens the pods out most (the sum of the squared
//! loads falls most; in practice a client of the busiest pod whose volume
//! is nearest half its gap to the least busy), each client at most once.
//! It stops when no move helps. It weighs message counts only, not the
//! number of technicians in a pod.
//!
//! Then, per pod, the first-response time of the threads opened in those
//! weeks (from the client's message arriving to the first reply by a pod
//! member reaching the support inbox): how many were answered, the median
//! and the 90th percentile (nearest rank), and how many threads wait for
//! a first reply now; and the waiting threads themselves, oldest first.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use super::{OpsError, Reader};

/// Pods whose shares are within this many points are balanced.
pub const BALANCED_WITHIN: f64 = 5.0;

/// At most this many moves are suggested.
const MAX_MOVES: usize = 5;

/// The key shown for relays with no client (`default_pod`, or a release
/// of mail from an unknown sender); such traffic cannot be moved.
const NO_CLIENT: &str = "(no client)";

/// Relays counted per week, pod and client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// The Monday the week starts on, `YYYY-MM-DD`.
    pub week: String,
    /// The pod's key.
    pub pod: String,
    /// The client's key, when the row has one.
    pub client: Option<String>,
    /// Relayed messages.
    pub count: u64,
}

/// The most waiting threads `stats` lists one by one.
const WAITING_SHOWN: usize = 20;

/// One thread still waiting for its first reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingThread {
    /// When the client's message arrived (RFC 3339).
    pub opened_at: String,
    /// The pod that has it.
    pub pod: String,
    /// The client's address.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// Whether it was escalated already.
    pub escalated: bool,
}

/// First responses and waiting threads of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodResponses {
    /// The pod's key.
    pub pod: String,
    /// Threads answered.
    pub answered: usize,
    /// Median first-response time, in milliseconds.
    pub median_ms: Option<u64>,
    /// 90th percentile, in milliseconds.
    pub p90_ms: Option<u64>,
    /// Threads waiting for a first reply now.
    pub waiting: usize,
}

/// The nearest-rank percentile `q` (0 to 1) of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Per pod: first responses (milliseconds) and the number waiting, in
/// `pods` order, then any pod only the journal names.
pub fn responses(
    pods: &[String],
    answered: &[(String, u64)],
    waiting: &[WaitingThread],
) -> Vec<PodResponses> {
    let mut all: Vec<String> = pods.to_vec();
    let named = answered
        .iter()
        .map(|(p, _)| p)
        .chain(waiting.iter().map(|w| &w.pod));
    for pod in named {
        if !all.contains(pod) {
            all.push(pod.clone());
        }
    }
    all.into_iter()
        .map(|pod| {
            let mut times: Vec<u64> = answered
                .iter()
                .filter(|(p, _)| *p == pod)
                .map(|(_, ms)| *ms)
                .collect();
            times.sort_unstable();
            PodResponses {
                answered: times.len(),
                median_ms: percentile(&times, 0.5),
                p90_ms: percentile(&times, 0.9),
                waiting: waiting.iter().filter(|w| w.pod == pod).count(),
                pod,
            }
        })
        .collect()
}

impl Reader {
    /// Whether the journal has the thread tables (a journal written by an
    /// older podrouter, not opened since, has none).
    pub(crate) fn has_threads(&self) -> Result<bool, OpsError> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'threads'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// First-response times (pod, milliseconds) of threads opened since
    /// `since` (a date or RFC 3339 time).
    pub fn first_responses(&self, since: &str) -> Result<Vec<(String, u64)>, OpsError> {
        if !self.has_threads()? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn().prepare(
            "SELECT pod, first_response_ms FROM threads \
             WHERE first_response_ms IS NOT NULL AND opened_at >= ?1",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every thread waiting for its first reply, oldest first.
    pub fn waiting_threads(&self) -> Result<Vec<WaitingThread>, OpsError> {
        if !self.has_threads()? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn().prepare(
            "SELECT opened_at, pod, sender, subject, escalated_at IS NOT NULL FROM threads \
             WHERE first_response_at IS NULL ORDER BY opened_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(WaitingThread {
                opened_at: r.get(0)?,
                pod: r.get(1)?,
                sender: r.get(2)?,
                subject: r.get(3)?,
                escalated: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The Mondays of the last `weeks` weeks up to `now` (RFC 3339),
    /// oldest first.
    pub fn week_starts(&self, now: &str, weeks: u32) -> Result<Vec<String>, OpsError> {
        let mut out = Vec::new();
        for back in (0..weeks).rev() {
            let shift = format!("-{} days", 7 * back);
            out.push(self.conn().query_row(
                "SELECT date(?1, '-6 days', 'weekday 1', ?2)",
                [now, &shift],
                |r| r.get(0),
            )?);
        }
        Ok(out)
    }

    /// Relays per week, pod and client since the Monday `first_week`.
    pub fn relay_counts(&self, first_week: &str) -> Result<Vec<Count>, OpsError> {
        let mut stmt = self.conn().prepare(
            "SELECT date(first_seen, '-6 days', 'weekday 1') AS week, pod, client, count(*) \
             FROM messages WHERE action = 'relay' AND relayed_at IS NOT NULL \
             AND pod IS NOT NULL AND first_seen >= ?1 \
             AND (rule IS NULL OR rule NOT IN ('reply', 'internal')) \
             GROUP BY week, pod, client ORDER BY week, pod, client",
        )?;
        let rows = stmt.query_map([first_week], |r| {
            Ok(Count {
                week: r.get(0)?,
                pod: r.get(1)?,
                client: r.get(2)?,
                count: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Relays per day (`YYYY-MM-DD`, UTC) and pod since the day
    /// `first_day`, counted like [`Reader::relay_counts`].
    pub fn daily_relays(&self, first_day: &str) -> Result<Vec<DayCount>, OpsError> {
        let mut stmt = self.conn().prepare(
            "SELECT date(first_seen) AS day, pod, count(*) \
             FROM messages WHERE action = 'relay' AND relayed_at IS NOT NULL \
             AND pod IS NOT NULL AND first_seen >= ?1 \
             AND (rule IS NULL OR rule NOT IN ('reply', 'internal')) \
             GROUP BY day, pod ORDER BY day, pod",
        )?;
        let rows = stmt.query_map([first_day], |r| {
            Ok(DayCount {
                day: r.get(0)?,
                pod: r.get(1)?,
                count: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Relays counted per day and pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCount {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The pod's key.
    pub pod: String,
    /// Relayed messages.
    pub count: u64,
}

/// The figures `stats` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The weeks shown, oldest first.
    pub weeks: Vec<String>,
    /// The pods, in table order (the table's pods, then any others the
    /// journal names).
    pub pods: Vec<String>,
    /// Relays per week (outer) and pod (inner, in `pods` order).
    pub per_week: Vec<Vec<u64>>,
    /// Relays per pod and client, over all the weeks.
    pub clients: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One suggested move.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The client to move.
    pub client: String,
    /// Its relays over the weeks shown.
    pub volume: u64,
    /// The pod it leaves.
    pub from: String,
    /// The pod it joins.
    pub to: String,
    /// Shares before (percent, in pod order).
    pub before: Vec<f64>,
    /// Shares after.
    pub after: Vec<f64>,
}

impl Stats {
    /// Builds the figures from the counts; `pods` are the table's pods.
    pub fn new(weeks: Vec<String>, pods: &[String], counts: &[Count]) -> Stats {
        let mut all: Vec<String> = pods.to_vec();
        for c in counts {
            if !all.contains(&c.pod) {
                all.push(c.pod.clone());
            }
        }
        let mut per_week = vec![vec![0; all.len()]; weeks.len()];
        let mut clients: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for c in counts {
            let Some(w) = weeks.iter().position(|w| *w == c.week) else {
                continue;
            };
            let p = all.iter().position(|p| *p == c.pod).expect("added above");
            per_week[w][p] += c.count;
            let client = c.client.clone().unwrap_or_else(|| NO_CLIENT.to_owned());
            *clients
                .entry(c.pod.clone())
                .or_default()
                .entry(client)
                .or_default() += c.count;
        }
        Stats {
            weeks,
            pods: all,
            per_week,
            clients,
        }
    }

    /// Relays per pod over all the weeks, in pod order.
    pub fn totals(&self) -> Vec<u64> {
        (0..self.pods.len())
            .map(|p| self.per_week.iter().map(|w| w[p]).sum())
            .collect()
    }

    /// A pod's busiest clients, most relays first (ties by name).
    pub fn busiest(&self, pod: &str) -> Vec<(&str, u64)> {
        let mut list: Vec<(&str, u64)> = self
            .clients
            .get(pod)
            .map(|m| m.iter().map(|(c, n)| (c.as_str(), *n)).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        list
    }

    /// The greedy balance hint; `movable` are the pods a client may join
    /// (the table's), so a pod only the journal knows is never a target.
    pub fn balance(&self, movable: &[String]) -> Vec<Move> {
        let mut loads = self.totals();
        let total: u64 = loads.iter().sum();
        let targets: Vec<usize> = (0..self.pods.len())
            .filter(|p| movable.contains(&self.pods[*p]))
            .collect();
        if total == 0 || targets.len() < 2 {
            return Vec::new();
        }
        // Where each client is now: (client, pod index, volume).
        let mut placed: Vec<(String, usize, u64)> = Vec::new();
        for (pod, clients) in &self.clients {
            let p = self.pods.iter().position(|x| x == pod).expect("known pod");
            for (client, n) in clients {
                if client != NO_CLIENT {
                    placed.push((client.clone(), p, *n));
                }
            }
        }
        let mut moved = BTreeSet::new();
        let mut moves = Vec::new();
        while moves.len() < MAX_MOVES {
            let spread = targets.iter().map(|p| loads[*p]).max().unwrap_or(0)
                - targets.iter().map(|p| loads[*p]).min().unwrap_or(0);
            if share(spread, total) <= BALANCED_WITHIN {
                break;
            }
            let Some((i, to)) = best_move(&placed, &targets, &loads, &moved) else {
                break;
            };
            let (client, from, volume) = placed[i].clone();
            let before = shares(&loads, total);
            loads[from] -= volume;
            loads[to] += volume;
            placed[i].1 = to;
            moved.insert(client.clone());
            moves.push(Move {
                client,
                volume,
                from: self.pods[from].clone(),
                to: self.pods[to].clone(),
                before,
                after: shares(&loads, total),
            });
        }
        moves
    }
}

/// The move (index into `placed`, target pod) that lowers the sum of the
/// squared loads the most, if any lowers it: moving `v` from a pod with
/// load `a` to one with load `b` changes that sum by `2v(v - (a - b))`, so
/// the best is a client whose volume is nearest half the gap between the
/// busiest pod and the least busy.
fn best_move(
    placed: &[(String, usize, u64)],
    targets: &[usize],
    loads: &[u64],
    moved: &BTreeSet<String>,
) -> Option<(usize, usize)> {
    let mut best: Option<(i128, usize, usize)> = None;
    for (i, (client, from, volume)) in placed.iter().enumerate() {
        if moved.contains(client) || *volume == 0 || !targets.contains(from) {
            continue;
        }
        for to in targets.iter().filter(|t| *t != from) {
            let v = i128::from(*volume);
            let gap = i128::from(loads[*from]) - i128::from(loads[*to]);
            let change = 2 * v * (v - gap);
            if change < 0 && best.is_none_or(|(c, _, _)| change < c) {
                best = Some((change, i, *to));
            }
        }
    }
    best.map(|(_, i, to)| (i, to))
}

/// `part` as a percentage of `total`.
fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// Each load as a percentage of `total`.
fn shares(loads: &[u64], total: u64) -> Vec<f64> {
    loads.iter().map(|l| share(*l, total)).collect()
}

/// Shares as `38/31/31`.
fn slashed(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{s:.0}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes the weekly table, the shares, the busiest clients and the hint.
pub fn write_stats(out: &mut impl Write, s: &Stats, movable: &[String]) -> std::io::Result<()> {
    let weeks = s.weeks.len();
    writeln!(
        out,
        "relayed messages per pod, last {weeks} week{} (weeks start Monday, UTC)",
        if weeks == 1 { "" } else { "s" }
    )?;
    writeln!(out)?;
    let width = |p: &String| p.chars().count().max(6);
    let row = |label: &str, cells: Vec<String>| {
        let mut line = format!("{label:<12}");
        for (cell, pod) in cells.iter().zip(&s.pods) {
            line.push_str(&format!("  {cell:>w$}", w = width(pod)));
        }
        line
    };
    let mut header = row("week", s.pods.clone());
    header.push_str(&format!("  {:>6}", "total"));
    writeln!(out, "{header}")?;
    for (week, counts) in s.weeks.iter().zip(&s.per_week) {
        let mut line = row(week, counts.iter().map(u64::to_string).collect());
        line.push_str(&format!("  {:>6}", counts.iter().sum::<u64>()));
        writeln!(out, "{line}")?;
    }
    let totals = s.totals();
    let total: u64 = totals.iter().sum();
    let mut line = row("total", totals.iter().map(u64::to_string).collect());
    line.push_str(&format!("  {total:>6}"));
    writeln!(out, "{line}")?;
    let cells = shares(&totals, total)
        .iter()
        .map(|x| format!("{x:.0}%"))
        .collect();
    writeln!(out, "{}", row("share", cells))?;

    writeln!(out)?;
    writeln!(out, "busiest clients")?;
    for (pod, pod_total) in s.pods.iter().zip(&totals) {
        let top: Vec<String> = s
            .busiest(pod)
            .iter()
            .take(3)
            .map(|(c, n)| format!("{c} {n} ({:.0}%)", share(*n, *pod_total)))
            .collect();
        let top = if top.is_empty() {
            "-".to_owned()
        } else {
            top.join(", ")
        };
        writeln!(out, "  {pod:<12}  {top}")?;
    }

    writeln!(out)?;
    write_balance(out, s, movable, total)
}

/// A duration in milliseconds as `1h 5m`, to the second.
pub fn took(ms: Option<u64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => {
            let secs = std::time::Duration::from_secs((ms + 500) / 1000);
            humantime::format_duration(secs).to_string()
        }
    }
}

/// Writes first-response times per pod and the threads waiting.
pub fn write_responses(
    out: &mut impl Write,
    pods: &[PodResponses],
    waiting: &[WaitingThread],
) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "first response per pod (threads opened in these weeks; nearest-rank percentiles)"
    )?;
    writeln!(
        out,
        "  {:<12}  {:>8}  {:>12}  {:>12}  {:>7}",
        "pod", "answered", "median", "p90", "waiting"
    )?;
    for p in pods {
        writeln!(
            out,
            "  {:<12}  {:>8}  {:>12}  {:>12}  {:>7}",
            p.pod,
            p.answered,
            took(p.median_ms),
            took(p.p90_ms),
            p.waiting
        )?;
    }
    writeln!(out)?;
    if waiting.is_empty() {
        return writeln!(out, "no thread waits for a first response");
    }
    writeln!(
        out,
        "threads waiting for a first response: {} (oldest first)",
        waiting.len()
    )?;
    writeln!(
        out,
        "  {:<19}  {:<12}  {:<32}  {:<9}  SUBJECT",
        "OPENED (UTC)", "POD", "SENDER", "ESCALATED"
    )?;
    for w in waiting.iter().take(WAITING_SHOWN) {
        let opened: String = w.opened_at.replace('T', " ").chars().take(19).collect();
        let sender: String = w
            .sender
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(32)
            .collect();
        let subject: String = w
            .subject
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(50)
            .collect();
        let escalated = if w.escalated { "yes" } else { "no" };
        writeln!(
            out,
            "  {opened:<19}  {:<12}  {sender:<32}  {escalated:<9}  {subject}",
            w.pod
        )?;
    }
    if waiting.len() > WAITING_SHOWN {
        writeln!(out, "  ... and {} more", waiting.len() - WAITING_SHOWN)?;
    }
    Ok(())
}

/// Writes the balance hint.
fn write_balance(
    out: &mut impl Write,
    s: &Stats,
    movable: &[String],
    total: u64,
) -> std::io::Result<()> {
    writeln!(out, "balance (shares in pod order {})", s.pods.join("/"))?;
    if total == 0 {
        return writeln!(out, "  no relayed mail in these weeks");
    }
    let moves = s.balance(movable);
    if moves.is_empty() {
        let now = shares(&s.totals(), total);
        return writeln!(out, "  no client move would help: shares {}", slashed(&now));
    }
    let weeks = s.weeks.len();
    for m in &moves {
        writeln!(
            out,
            "  move client {} ({} msg{}/{weeks}w) from {} to {}: shares {} -> {}",
            m.client,
            m.volume,
            if m.volume == 1 { "" } else { "s" },
            m.from,
            m.to,
            slashed(&m.before),
            slashed(&m.after)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{journal, Row};

    fn count(week: &str, pod: &str, client: &str, n: u64) -> Count {
        Count {
            week: week.into(),
            pod: pod.into(),
            client: Some(client.into()),
            count: n,
        }
    }

    fn pods() -> Vec<String> {
        ["alberta", "coast", "prairies"].map(String::from).to_vec()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.9), Some(9));
        assert_eq!(percentile(&[7], 0.9), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn first_responses_and_waiting_threads_per_pod() {
        let answered: Vec<(String, u64)> = [
            ("alberta", 60_000),
            ("alberta", 3_600_000),
            ("alberta", 120_000),
        ]
        .map(|(p, ms)| (p.to_owned(), ms))
        .to_vec();
        let waiting = vec![WaitingThread {
            opened_at: "2026-12-03T09:14:02.000Z".into(),
            pod: "coast".into(),
            sender: Some("parks@rec.sunnyvale.example".into()),
            subject: Some("Arena kiosk".into()),
            escalated: true,
        }];
        let r = responses(&pods(), &answered, &waiting);
        assert_eq!(r[0].answered, 3);
        assert_eq!(r[0].median_ms, Some(120_000));
        assert_eq!(r[0].p90_ms, Some(3_600_000));
        assert_eq!(
            (r[1].pod.as_str(), r[1].waiting, r[1].answered),
            ("coast", 1, 0)
        );
        let mut out = Vec::new();
        write_responses(&mut out, &r, &waiting).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("alberta              3            2m            1h"),
            "{text}"
        );
        assert!(text.contains("2026-12-03 09:14:02  coast"), "{text}");
        assert!(
            text.contains("threads waiting for a first response: 1"),
            "{text}"
        );
    }

    #[test]
    fn one_move_evens_out_three_pods() {
        // alberta 40, coast 30, prairies 30 (of 100).
        let counts = [
            count("2026-11-23", "alberta", "sunnyvale", 2),
            count("2026-11-30", "alberta", "sunnyvale", 4),
            count("2026-11-30", "alberta", "cochrane", 34),
            count("2026-11-30", "coast", "tofino", 30),
            count("2026-11-30", "prairies", "moose", 30),
        ];
        let weeks = vec!["2026-11-23".into(), "2026-11-30".into()];
        let s = Stats::new(weeks, &pods(), &counts);
        assert_eq!(s.totals(), [40, 30, 30]);
        let moves = s.balance(&pods());
        assert_eq!(moves.len(), 1, "{moves:?}");
        let m = &moves[0];
        assert_eq!((m.client.as_str(), m.volume), ("sunnyvale", 6));
        assert_eq!((m.from.as_str(), m.to.as_str()), ("alberta", "coast"));
        assert_eq!(slashed(&m.before), "40/30/30");
        assert_eq!(slashed(&m.after), "34/36/30");

        let mut out = Vec::new();
        write_stats(&mut out, &s, &pods()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "  move client sunnyvale (6 msgs/2w) from alberta to coast: \
                 shares 40/30/30 -> 34/36/30"
            ),
            "{text}"
        );
    }

    #[test]
    fn greedy_moves_the_best_fit_and_repeats_while_it_helps() {
        // alberta 90 (50 + 30 + 10), coast 10, prairies 0: gap 90.
        let counts = [
            count("2026-11-30", "alberta", "big", 50),
            count("2026-11-30", "alberta", "mid", 30),
            count("2026-11-30", "alberta", "small", 10),
            count("2026-11-30", "coast", "tofino", 10),
        ];
        let s = Stats::new(vec!["2026-11-30".into()], &pods(), &counts);
        let moves = s.balance(&pods());
        let names: Vec<(&str, &str, &str)> = moves
            .iter()
            .map(|m| (m.client.as_str(), m.from.as_str(), m.to.as_str()))
            .collect();
        // 90/10/0: big (50, nearest half of the 90 gap) goes to prairies:
        // 40/10/50. Then small (10) from alberta to coast: 30/20/50. Then
        // nothing helps: big moved already, and mid (30) is too big.
        assert_eq!(
            names,
            [
                ("big", "alberta", "prairies"),
                ("small", "alberta", "coast")
            ]
        );
        assert_eq!(slashed(&moves[1].after), "30/20/50");
    }

    #[test]
    fn balanced_pods_get_no_hint_and_unknown_clients_never_move() {
        let counts = [
            count("2026-11-30", "alberta", "a", 34),
            count("2026-11-30", "coast", "c", 33),
            count("2026-11-30", "prairies", "p", 33),
        ];
        let s = Stats::new(vec!["2026-11-30".into()], &pods(), &counts);
        assert!(s.balance(&pods()).is_empty());

        let lopsided = [Count {
            week: "2026-11-30".into(),
            pod: "alberta".into(),
            client: None,
            count: 100,
        }];
        let s = Stats::new(vec!["2026-11-30".into()], &pods(), &lopsided);
        assert!(s.balance(&pods()).is_empty());
        assert_eq!(s.busiest("alberta"), [(NO_CLIENT, 100)]);
    }

    #[test]
    fn counts_come_from_relays_in_the_window_by_week() {
        let dir = tempfile::tempdir().unwrap();
        let relay = |client, pod, time| Row {
            client: Some(client),
            pod: Some(pod),
            first_seen: time,
            relayed: true,
            ..Default::default()
        };
        journal(
            dir.path(),
            &[
                // Before the window.
                relay("sunnyvale", "alberta", "2026-10-01T10:00:00.000Z"),
                // Monday and Sunday of the same week.
                relay("sunnyvale", "alberta", "2026-11-30T00:00:00.000Z"),
                relay("sunnyvale", "alberta", "2026-12-06T23:59:59.000Z"),
                relay("tofino", "coast", "2026-12-07T09:00:00.000Z"),
                // Not relayed: a hold, and a relay the server refused.
                Row {
                    action: "hold",
                    ..relay("x", "coast", "2026-12-07T09:00:00.000Z")
                },
                Row {
                    relayed: false,
                    ..relay("y", "coast", "2026-12-07T09:00:00.000Z")
                },
            ],
        );
        let r = Reader::open(dir.path()).unwrap();
        let weeks = r.week_starts("2026-12-09T12:00:00.000Z", 2).unwrap();
        assert_eq!(weeks, ["2026-11-30", "2026-12-07"]);
        let counts = r.relay_counts(&weeks[0]).unwrap();
        assert_eq!(
            counts,
            [
                count("2026-11-30", "alberta", "sunnyvale", 2),
                count("2026-12-07", "coast", "tofino", 1),
            ]
        );
        let s = Stats::new(weeks, &pods(), &counts);
        assert_eq!(s.per_week, [[2, 0, 0], [0, 1, 0]]);
        let mut out = Vec::new();
        write_stats(&mut out, &s, &pods()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("week          alberta   coast  prairies   total\n"),
            "{text}"
        );
        assert!(
            text.contains("2026-11-30          2       0         0       2\n"),
            "{text}"
        );
        assert!(
            text.contains("share             67%     33%        0%\n"),
            "{text}"
        );
        assert!(
            text.contains("  alberta       sunnyvale 2 (100%)\n"),
            "{text}"
        );
        // Moving either client only swaps the pods' loads.
        assert!(
            text.contains("no client move would help: shares 67/33/0"),
            "{text}"
        );
    }
}
