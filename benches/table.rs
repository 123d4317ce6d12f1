//! The routing table at scale: lookup latency and the cost of a reload.
//!
//! A generated `routing.toml` of 100,000 clients (150,000 domains, 50,000
//! exact addresses, 25,000 phones, 8 pods) is loaded once for the lookup
//! benches and again, whole, for each sample of the load benches. Each
//! figure has a peer measured in the same run, so results read as ratios:
//! a lookup against one probe of a plain `HashMap<String, u32>`, a load
//! against the bare TOML parse of the same text.
//!
//! `cargo bench --bench table` runs everything in a few minutes. Three
//! one-off modes skip criterion, each taking an optional client count:
//! `-- --gen-table` prints the generated table (see `scripts/gen-table`),
//! `-- --memory` loads it once and prints the process's peak and resident
//! memory from `/proc/self/status`, and `-- --once` times one load, the
//! drop of the loaded config and the peers by wall clock and CPU time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use podrouter::address::normalize_address;
use podrouter::config::{self, Config};

/// Clients in the benchmark table.
const CLIENTS: usize = 100_000;

/// Pods the clients are spread over.
const PODS: usize = 8;

/// Queries per lookup set; cycled through so each probe hits a new key.
const QUERIES: usize = 4096;

/// The name the generated text is validated under.
const TABLE_PATH: &str = "bench-routing.toml";

/// Kinds of client, for keys, names and domains.
const KINDS: [&str; 6] = ["town", "city", "county", "village", "district", "rm"];

/// How each kind of client is named.
const TITLES: [&str; 6] = [
    "Town",
    "City",
    "County",
    "Village",
    "District",
    "Rural Municipality",
];

/// Provinces, for the clients' names.
const PROVINCES: [&str; 4] = ["Alberta", "Saskatchewan", "Manitoba", "British Columbia"];

/// Area codes the generated phone numbers use.
const AREAS: [u32; 8] = [403, 587, 780, 306, 204, 250, 604, 778];

/// Local parts of the clients' exact addresses.
const LOCALS: [&str; 5] = ["clerk", "mayor", "reeve", "admin", "it"];

/// A small deterministic generator (xorshift64), so every run sees the same
/// table and the same queries.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One generated client, as written in the table.
struct GenClient {
    key: String,
    domains: Vec<String>,
    address: Option<String>,
    phone: Option<String>,
}

/// The client numbered `i`: 1 or 2 domains (every 100th one Unicode, every
/// 50th in mixed case), an exact address for every other client and a
/// phone for every fourth, half of them written in national form.
fn client(i: usize) -> GenClient {
    let kind = KINDS[i % KINDS.len()];
    let mut first = format!("{kind}{i}.example");
    if i % 100 == 7 {
        first = format!("müller{kind}{i}.example");
    } else if i % 50 == 3 {
        first = format!("{}{i}.Example", kind.to_uppercase());
    }
    let mut domains = vec![first];
    if i % 2 == 1 {
        domains.push(format!("{kind}{i}-gov.ca.example"));
    }
    let address = (i % 2 == 0).then(|| {
        let local = LOCALS[i / 2 % LOCALS.len()];
        format!("{local}.{kind}{i}@freemail.example")
    });
    let phone = (i % 4 == 1).then(|| {
        let (area, n) = (AREAS[i / 4 % AREAS.len()], i / 4 / AREAS.len());
        let (exchange, line) = (201 + n / 10_000, n % 10_000);
        if i % 8 == 1 {
            format!("+1 {area} {exchange} {line:04}")
        } else {
            format!("({area}) {exchange}-{line:04}")
        }
    });
    GenClient {
        key: format!("{kind}-{i:06}"),
        domains,
        address,
        phone,
    }
}

/// The head of the file: server sections, routing defaults and the pods.
fn head(out: &mut String) {
    out.push_str(
        "[inbox]\nserver = \"imap.vendor.example\"\nuser = \"support@vendor.example\"\n\
         password_env = \"PODROUTER_IMAP_PASSWORD\"\n\n\
         [relay]\nserver = \"smtp.vendor.example\"\nport = 587\ntls = \"starttls\"\n\
         user = \"support@vendor.example\"\npassword_env = \"PODROUTER_SMTP_PASSWORD\"\n\
         from = \"support@vendor.example\"\n\n\
         [routing]\ndefault_region = \"CA\"\n\n",
    );
    for p in 0..PODS {
        let _ = writeln!(out, "[pods.pod-{p}]\nname = \"POD {p}\"\nmembers = [");
        for m in 0..4 + p % 2 {
            let _ = writeln!(out, "  \"Tech {p}.{m} <tech{p}.{m}@vendor.example>\",");
        }
        out.push_str("]\n\n");
    }
}

/// Writes a TOML array of strings.
fn array(out: &mut String, key: &str, items: &[&str]) {
    let _ = write!(out, "{key} = [");
    for (n, item) in items.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}\"{item}\"");
    }
    out.push_str("]\n");
}

/// The whole generated `routing.toml` for `clients` clients.
fn table_text(clients: usize) -> String {
    let mut out = String::with_capacity(clients * 200);
    head(&mut out);
    for i in 0..clients {
        let c = client(i);
        let _ = writeln!(out, "[clients.{}]", c.key);
        let (title, province) = (TITLES[i % TITLES.len()], PROVINCES[i / 7 % PROVINCES.len()]);
        let _ = writeln!(out, "name = \"{title} of Place {i}, {province}\"");
        let _ = writeln!(out, "pod = \"pod-{}\"", i % PODS);
        let domains: Vec<&str> = c.domains.iter().map(String::as_str).collect();
        array(&mut out, "domains", &domains);
        if let Some(a) = &c.address {
            array(&mut out, "addresses", &[a]);
        }
        if let Some(p) = &c.phone {
            array(&mut out, "phones", &[p]);
        }
        out.push('\n');
    }
    out
}

/// Sender addresses to look up, already normalised as the engine passes
/// them: each kind apart, and a mix of them in random order.
struct Queries {
    /// A client's exact address.
    exact: Vec<String>,
    /// Mail from a client's domain itself or from 1 to 3 labels below it
    /// (`staff7@it.hall.town123.example`); a quarter of each.
    subdomain: Vec<String>,
    /// Senders that match nothing: an unclaimed freemail address or an
    /// unknown domain.
    miss: Vec<String>,
    /// 20% exact, 60% domain, 20% misses, shuffled.
    mix: Vec<String>,
}

/// Builds the query sets for a table of `clients` clients.
fn queries(clients: usize) -> Queries {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let norm = |a: String| normalize_address(&a).expect("generated address is valid");
    let mut exact = Vec::new();
    let mut subdomain = Vec::new();
    let mut miss = Vec::new();
    while exact.len() < QUERIES {
        if let Some(a) = client(rng.below(clients)).address {
            exact.push(norm(a));
        }
    }
    for n in 0..QUERIES {
        let c = client(rng.below(clients));
        let domain = &c.domains[rng.below(c.domains.len())];
        let sub = ["", "hall.", "it.hall.", "mail.it.hall."][n % 4];
        subdomain.push(norm(format!("staff{n}@{sub}{domain}")));
    }
    for n in 0..QUERIES {
        let unknown = rng.below(1_000_000);
        miss.push(match n % 3 {
            0 => format!("someone{unknown}@freemail.example"),
            1 => format!("info@unknown{unknown}.example"),
            _ => format!("it@hall.unknown{unknown}.example.org"),
        });
    }
    let mut mix = Vec::with_capacity(QUERIES);
    for n in 0..QUERIES {
        let set = match n % 5 {
            0 => &exact,
            4 => &miss,
            _ => &subdomain,
        };
        mix.push(set[rng.below(set.len())].clone());
    }
    Queries {
        exact,
        subdomain,
        miss,
        mix,
    }
}

/// Validates generated text, panicking with the first problems if any.
fn load(text: &str) -> Config {
    match config::from_str(text, Path::new(TABLE_PATH)) {
        Ok(c) => c,
        Err(e) => panic!(
            "generated table is invalid:\n{}",
            first_lines(&e.to_string(), 10)
        ),
    }
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// Benchmarks `lookup` over `queries`, one probe per iteration, cycling.
fn cycle<T>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    queries: &[String],
    lookup: impl Fn(&str) -> T,
) {
    c.bench_function(name, |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % queries.len();
            black_box(lookup(black_box(&queries[n])))
        })
    });
}

/// Lookup latency on the loaded table, with a bare hash probe as peer.
fn lookups(c: &mut Criterion, config: &Config, q: &Queries) {
    let table = &config.table;
    let mut g = c.benchmark_group("lookup");
    g.measurement_time(Duration::from_secs(3));
    cycle(&mut g, "mix", &q.mix, |a| table.lookup_address(a).is_some());
    cycle(&mut g, "exact_address", &q.exact, |a| {
        table.lookup_address(a).is_some()
    });
    cycle(&mut g, "subdomain", &q.subdomain, |a| {
        table.lookup_address(a).is_some()
    });
    cycle(&mut g, "miss", &q.miss, |a| {
        table.lookup_address(a).is_some()
    });
    cycle(&mut g, "normalize_then_lookup_mix", &q.mix, |a| {
        let a = normalize_address(a).ok()?;
        table.lookup_address(&a).map(|m| m.pod.len())
    });

    // The peer: one probe of a std HashMap holding the same 150,000
    // domains, looked up by domains it holds.
    let peer: HashMap<String, u32> = config
        .clients
        .values()
        .flat_map(|c| c.domains.iter().cloned())
        .zip(0..)
        .collect();
    let keys: Vec<String> = q
        .subdomain
        .iter()
        .map(|a| a.rsplit_once('@').unwrap().1)
        .filter(|d| peer.contains_key(*d))
        .map(str::to_string)
        .collect();
    cycle(&mut g, "peer_hashmap_probe", &keys, |k| {
        peer.get(k).copied()
    });
    g.finish();
}

/// The cost of a reload, with the bare TOML parse of the same text as peer.
/// Results are dropped outside the timing: the drop of a replaced table is
/// a cost of its own (see `--once`).
fn loads(c: &mut Criterion, text: &str) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(text.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("config_from_str", CLIENTS),
        text,
        |b, t| b.iter_with_large_drop(|| config::from_str(t, Path::new(TABLE_PATH)).ok()),
    );
    g.bench_with_input(
        BenchmarkId::new("peer_toml_table", CLIENTS),
        text,
        |b, t| b.iter_with_large_drop(|| toml::from_str::<toml::Table>(t).ok()),
    );
    g.bench_with_input(
        BenchmarkId::new("peer_detable_parse", CLIENTS),
        text,
        |b, t| b.iter_with_large_drop(|| toml::de::DeTable::parse(t).ok()),
    );
    g.finish();
}

/// `VmHWM` and `VmRSS` from `/proc/self/status`, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name));
        let kib: f64 = line
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Time this thread has run on a CPU (`/proc/thread-self/schedstat`), which
/// unlike the wall clock leaves out time spent waiting for a busy machine.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.unwrap_or(0))
}

/// `--memory`: one load, with the memory it took.
fn report_memory(clients: usize) {
    let (_, start) = memory();
    let text = table_text(clients);
    let (_, with_text) = memory();
    let started = Instant::now();
    let config = load(&text);
    let took = started.elapsed();
    let (peak, loaded) = memory();
    drop(text);
    let (_, table_only) = memory();
    let (clients, addresses, domains, phones) = config.table.sizes();
    println!("table: {clients} clients, {domains} domains, {addresses} addresses, {phones} phones");
    println!("text: {:.1} MiB generated", (with_text - start).max(0.0));
    println!("one load: {took:.2?}");
    println!("peak during load (VmHWM): {peak:.1} MiB");
    println!(
        "resident after load, text dropped: {table_only:.1} MiB ({:.1} MiB over start)",
        table_only - start
    );
    println!("resident with text and config: {loaded:.1} MiB");
    black_box(config);
}

/// `--once`: one load and one of each peer parse, each twice, timed by
/// the wall clock and by time on a CPU; the drop of the loaded config (what
/// a reload pays for the table it replaces) is timed apart.
fn report_once(clients: usize) {
    // A running daemon has loaded a table before it reloads one, so the
    // lazy one-time set-up (phone metadata) is not part of the figure.
    load(&table_text(10));
    let text = table_text(clients);
    for _ in 0..2 {
        let config = timed("config::from_str", || load(&text));
        timed("drop of the config", || drop(config));
        timed("toml::Table", || toml::from_str::<toml::Table>(&text).ok());
        timed("DeTable::parse", || toml::de::DeTable::parse(&text).ok());
    }
}

/// Runs `f` once and prints how long it took; its result is returned, to
/// be dropped outside the timing.
fn timed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let (started, cpu) = (Instant::now(), cpu_time());
    let out = f();
    let (wall, cpu) = (started.elapsed(), cpu_time() - cpu);
    println!("{name}: {wall:.2?} wall, {cpu:.2?} on cpu");
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--gen-table") {
        let clients = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(CLIENTS);
        print!("{}", table_text(clients));
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        let clients = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(CLIENTS);
        report_memory(clients);
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--once") {
        let clients = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(CLIENTS);
        report_once(clients);
        return;
    }
    let text = table_text(CLIENTS);
    let config = load(&text);
    let q = queries(CLIENTS);
    let mut c = Criterion::default().configure_from_args();
    lookups(&mut c, &config, &q);
    loads(&mut c, &text);
    c.final_summary();
}
