//! The `podrouter` subcommands: argument parsing and what each prints.
//!
//! Exit codes mean the same everywhere: 0 ok, 1 bad input or config (or,
//! for `who`, nothing matched and the mail would be held; for `trace`,
//! the journal knows nothing of it; for `release`, the relay did not take
//! the message), 2 usage.
//!
//! The operator commands (`log`, `trace`, `held`, `release`, `stats`) are
//! argument parsing here; what they read and do is in [`crate::ops`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{self, Auth, Config, FromMode, Server, TlsMode};
use crate::emit::{self, EmitOptions};
use crate::engine::{self, Action, Decision, Rule};
use crate::ops::Since;
use crate::phone;

mod operator;

use operator::{manpage, release, show_held, show_log, show_stats, show_trace};

/// Where the config is looked for when neither `-c` nor
/// `PODROUTER_CONFIG` names it, in order.
const CONFIG_FALLBACKS: [&str; 2] = ["routing.toml", "/etc/podrouter/routing.toml"];

/// What `--help` and the man page add after the list of commands.
const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  bad input or config, or the command could not do its work
  2  usage error

Files:
  /etc/podrouter/routing.toml          the routing table (podrouter check validates it)
  /var/lib/podrouter/journal.sqlite3   the journal of every message handled

Environment:
  PODROUTER_CONFIG     the routing table, when -c is not given
  PODROUTER_STATE_DIR  the journal's folder, when --state-dir is not given
  RUST_LOG             log detail of `run` (e.g. podrouter=debug)";

/// Routes a shared support inbox to the pod of technicians that serves
/// each client.
#[derive(Debug, Parser)]
#[command(
    name = "podrouter",
    version,
    about,
    long_about = "Routes a shared support inbox to the pod of technicians that serves each \
                  client.\n\n\
                  `podrouter run` watches the inbox over IMAP, works out which client sent \
                  each message from routing.toml, and relays it over SMTP to that client's \
                  pod. Auto-replies, bounces and loops are filed without a relay; mail from \
                  unknown senders is held for a person. Every decision is kept in a journal, \
                  which `log`, `trace`, `held` and `stats` read.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate routing.toml and print a summary of pods and clients.
    ///
    /// Prints every problem with file:line:column and exits 1 when the
    /// table is not valid. The daemon uses the same validator at start-up
    /// and on reload.
    Check(ConfigArg),
    /// Decide offline what happens to messages (.eml files, or - for stdin).
    ///
    /// Prints, per message, the sender, client, pod, action (relay, skip
    /// or hold), the recipients and the rule or reason.
    Route(RouteArgs),
    /// Show which client and pod an address, domain or phone number maps to.
    Who(WhoArgs),
    /// Run the daemon: watch the inbox, relay to pods, file what was done.
    ///
    /// SIGHUP re-reads and validates the table (an invalid one is logged
    /// and the old one keeps routing); SIGTERM or SIGINT finishes the
    /// message in flight and exits 0. Logs go to standard error; set
    /// RUST_LOG (e.g. `podrouter=debug`) for more detail.
    ///
    /// Unless `[http] enabled = false`, it also serves `/metrics`
    /// (Prometheus), `/healthz`, the `/status` page and the caller lookup
    /// `/v1/route?caller=NUMBER` on `[http] listen` (default
    /// 127.0.0.1:9187).
    Run(RunArgs),
    /// List routing decisions from the journal, newest first.
    ///
    /// Each line shows when the message arrived (UTC), the sender, client,
    /// pod, action (relay, skip or hold), the reason and the subject. The
    /// filters combine. Reads the journal only, so it works next to a
    /// running daemon and without the mail servers.
    Log(LogArgs),
    /// Tell the whole story of one message, or of one sender's recent mail.
    ///
    /// Give a Message-ID (with or without <>) for every copy of that
    /// message, oldest first: when it arrived, what was decided and by
    /// which rule, the relay's reply and queue id, retries, refusals, the
    /// folder it was filed in, and later copies recorded as duplicates.
    /// Give a sender's address for their most recent mail, newest first.
    /// Exits 1 when the journal knows nothing of it.
    Trace(TraceArgs),
    /// List what waits in the hold folder, and why.
    ///
    /// Reads the hold folder over IMAP (so it needs [inbox] and its
    /// password) and finds each message's journal entry by its content.
    /// The UID shown is the one `release` takes. --offline lists from the
    /// journal alone instead, without UIDs.
    Held(HeldArgs),
    /// Relay one held message to a pod chosen by a person.
    ///
    /// Fetches UID from the hold folder, relays it to every member of POD
    /// (recorded in the journal as released by $SUDO_USER or $USER), and
    /// only once the relay has accepted it moves it to the done folder. A
    /// message the relay defers or refuses stays in the hold folder, and
    /// the command exits 1. Needs [inbox], [relay] and their passwords, as
    /// the daemon does.
    Release(ReleaseArgs),
    /// Show relayed messages per pod and week, and how to even out the pods.
    ///
    /// Prints a table of relayed messages per week (weeks start on Monday,
    /// UTC) and pod, each pod's share, its busiest clients, and which
    /// clients to move from the busiest pods to the least busy ones to even
    /// out the load.
    Stats(StatsArgs),
    /// OAuth2 sign-in for Microsoft 365 and Google mailboxes.
    #[command(subcommand)]
    Oauth2(Oauth2Command),
    /// Write the man pages into DIR (used when packaging).
    #[command(hide = true)]
    Manpage(ManpageArgs),
}

/// The config and the journal's folder, for the commands that read it.
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where the journal lives [default: daemon.state_dir from the table,
    /// else /var/lib/podrouter].
    #[arg(long, value_name = "DIR", env = "PODROUTER_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// `--state-dir`, else the table's `daemon.state_dir` (the table is
    /// only read in that case).
    fn state_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(self.config.load()?.daemon.state_dir),
        }
    }

    /// The table and the state folder.
    fn config_and_state(&self) -> anyhow::Result<(Config, PathBuf)> {
        let config = self.config.load()?;
        let dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| config.daemon.state_dir.clone());
        Ok((config, dir))
    }
}

/// An action, for `log --action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ActionArg {
    /// Relayed to a pod.
    Relay,
    /// Filed without a relay (auto-reply, bounce, loop, duplicate).
    Skip,
    /// Held for a person.
    Hold,
}

/// Arguments of `podrouter log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Only messages that arrived since then: a span back from now (30m,
    /// 2h, 1d, 2weeks) or a UTC date or time (2026-12-01,
    /// 2026-12-01T08:00:00Z).
    #[arg(long, value_name = "WHEN", value_parser = Since::parse)]
    since: Option<Since>,
    /// Only messages routed to this pod (its key in the table).
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// Only messages from this client (its key in the table).
    #[arg(long, value_name = "CLIENT")]
    client: Option<String>,
    /// Only this action.
    #[arg(long, value_enum)]
    action: Option<ActionArg>,
    /// At most N lines; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Print one JSON object per line (keys time, sender, client, pod,
    /// action, reason, subject, message_id, folder).
    #[arg(long)]
    json: bool,
}

/// Arguments of `podrouter trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    state: StateArgs,
    /// For an address: at most N messages; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
    /// A Message-ID (with or without <>) or a sender's address.
    #[arg(value_name = "MESSAGE-ID|ADDRESS")]
    target: String,
}

/// Arguments of `podrouter held`.
#[derive(Debug, Args)]
pub struct HeldArgs {
    #[command(flatten)]
    state: StateArgs,
    /// List what the journal last filed in the hold folder, without
    /// connecting to the inbox (journal entries instead of UIDs; a message
    /// moved by hand still shows).
    #[arg(long)]
    offline: bool,
}

/// Arguments of `podrouter release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The pod to relay it to (its key in the table).
    #[arg(long, value_name = "POD")]
    pod: String,
    /// The message's UID in the hold folder, as `podrouter held` shows it.
    #[arg(value_name = "UID")]
    uid: u32,
}

/// Arguments of `podrouter stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// How many weeks back, this week included.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=520))]
    weeks: u32,
}

/// Arguments of `podrouter manpage`.
#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// The folder to write podrouter.1 and podrouter-COMMAND.1 into.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Arguments of `podrouter run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where the journal lives [default: daemon.state_dir from the table,
    /// else /var/lib/podrouter].
    #[arg(long, value_name = "DIR", env = "PODROUTER_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// The subcommands of `podrouter oauth2`.
#[derive(Debug, Subcommand)]
pub enum Oauth2Command {
    /// Get the first refresh token by the device code flow.
    ///
    /// Prints a URL and a code; a person opens the URL, enters the code
    /// and signs in with the mailbox's account. The refresh token is then
    /// written to --out (or the table's refresh_token_file) with mode
    /// 0600. Flags override what -c's [oauth2] table says.
    Authorize(AuthorizeArgs),
}

/// Arguments of `podrouter oauth2 authorize`.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// A routing table whose [oauth2] (or [inbox.oauth2], [relay.oauth2])
    /// gives provider, tenant, client_id, client_secret_file, scopes and
    /// refresh_token_file; the file need not exist yet.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The provider whose endpoints and scopes to use.
    #[arg(long, value_parser = ["microsoft", "google"])]
    provider: Option<String>,
    /// The Microsoft 365 tenant (directory id or domain).
    #[arg(long)]
    tenant: Option<String>,
    /// The application (client) id registered for podrouter.
    #[arg(long)]
    client_id: Option<String>,
    /// The client secret, for a confidential client (Google's have one).
    #[arg(long, value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// Where to write the refresh token.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The device authorization endpoint, instead of the provider's.
    #[arg(long, value_name = "URL")]
    device_url: Option<String>,
    /// The token endpoint, instead of the provider's.
    #[arg(long, value_name = "URL")]
    token_url: Option<String>,
    /// A scope to ask for instead of the provider's (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
}

/// The `-c FILE` option shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The routing table [default: $PODROUTER_CONFIG, ./routing.toml,
    /// /etc/podrouter/routing.toml].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

/// Arguments of `podrouter route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON object per message and line.
    #[arg(long)]
    json: bool,
    /// Write the exact bytes that would be relayed to DIR/<input file name>.
    #[arg(long, value_name = "DIR")]
    emit: Option<PathBuf>,
    /// Place replies in the threads of the journal in DIR (without it, no
    /// message belongs to a known thread).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Messages to decide; - reads one message from standard input.
    #[arg(required = true, value_name = "FILE.eml")]
    files: Vec<PathBuf>,
}

/// Arguments of `podrouter who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A mail address, a domain, or a phone number.
    #[arg(value_name = "ADDRESS|DOMAIN|PHONE")]
    target: String,
}

impl ConfigArg {
    /// The config file to read: `-c`, then `PODROUTER_CONFIG`, then the
    /// first of the fallbacks that exists.
    pub fn resolve(&self) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("PODROUTER_CONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let found = CONFIG_FALLBACKS.iter().map(Path::new).find(|p| p.exists());
        found
            .unwrap_or(Path::new(CONFIG_FALLBACKS[1]))
            .to_path_buf()
    }

    /// Loads and validates the config, printing every problem on failure.
    pub fn load(&self) -> anyhow::Result<Config> {
        let path = self.resolve();
        config::load(&path).map_err(|e| {
            eprintln!("{e}");
            let n = e.problems.len();
            anyhow::anyhow!(
                "{n} problem{} in {}; nothing was loaded",
                if n == 1 { "" } else { "s" },
                path.display()
            )
        })
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Route(args) => route(&args),
        Command::Who(args) => who(&args),
        Command::Run(args) => run_daemon(&args),
        Command::Log(args) => show_log(&args),
        Command::Trace(args) => show_trace(&args),
        Command::Held(args) => show_held(&args),
        Command::Release(args) => release(&args),
        Command::Stats(args) => show_stats(&args),
        Command::Oauth2(Oauth2Command::Authorize(args)) => oauth2_authorize(&args),
        Command::Manpage(args) => manpage(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podrouter: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `podrouter oauth2 authorize`: the device code flow.
fn oauth2_authorize(args: &AuthorizeArgs) -> anyhow::Result<ExitCode> {
    let mut request = crate::oauth::authorize::Request {
        provider: args
            .provider
            .as_deref()
            .and_then(crate::oauth::Provider::parse),
        tenant: args.tenant.clone(),
        client_id: args.client_id.clone(),
        client_secret_file: args.client_secret_file.clone(),
        out: args.out.clone(),
        device_url: args.device_url.clone(),
        token_url: args.token_url.clone(),
        scopes: args.scopes.clone(),
    };
    if let Some(path) = &args.config {
        request.fill_from_table(path)?;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    let mut out = std::io::stdout();
    runtime.block_on(crate::oauth::authorize::authorize(&request, &mut out))?;
    Ok(ExitCode::SUCCESS)
}

/// `podrouter run`: the daemon, on a multi-threaded tokio runtime.
fn run_daemon(args: &RunArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config_path = args.config.resolve();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(crate::daemon::run_with_signals(
        config_path,
        args.state_dir.clone(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs for operators on standard error (the journal under systemd):
/// info by default, `RUST_LOG` to change it. Dependencies stay at warn by
/// default; lettre is built without its tracing feature, so its debug
/// output, which would write the AUTH line, never exists.
fn init_logging() {
    use tracing_subscriber::EnvFilter;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,podrouter=info"));
    // async-imap writes the LOGIN command, password and all, at trace.
    let filter = filter.add_directive("async_imap=debug".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // journald stamps each line itself.
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// `podrouter check`: validate and summarise.
fn check(args: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let mut out = std::io::stdout().lock();
    write_summary(&mut out, &config)?;
    Ok(ExitCode::SUCCESS)
}

/// A pod's hunt group, acknowledgements and escalation, for the summary;
/// `None` when it has none of them.
fn pod_settings(pod: &crate::config::Pod) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(phone) = &pod.phone {
        parts.push(format!("hunt group {phone}"));
    }
    if pod.ack {
        let every = humantime::format_duration(pod.ack_interval);
        parts.push(format!("acknowledges (once per {every})"));
    }
    if let Some(r) = &pod.respond {
        let within = humantime::format_duration(r.within);
        let hours = if r.hours.is_some() {
            let zone = r.time_zone.iana_name().unwrap_or("UTC");
            format!(" of business hours ({zone})")
        } else {
            String::new()
        };
        let also = r
            .escalate_to
            .as_ref()
            .map_or(String::new(), |a| format!(", also to {a}"));
        parts.push(format!("escalates after {within}{hours}{also}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Writes the one-screen summary of a valid table.
fn write_summary(out: &mut impl Write, c: &Config) -> std::io::Result<()> {
    writeln!(out, "{}: ok", c.path.display())?;
    if let Some(i) = &c.inbox {
        writeln!(
            out,
            "  inbox  {} folder {} -> done {}, hold {}",
            server_line(&i.server),
            i.folder,
            i.done_folder,
            i.hold_folder
        )?;
    }
    if let Some(r) = &c.relay {
        let mode = match r.from_mode {
            FromMode::Rewrite => "rewrite",
            FromMode::Keep => "keep",
        };
        writeln!(
            out,
            "  relay  {} from {} ({mode})",
            server_line(&r.server),
            r.from
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "  {:<14} {:<36} {:>7} {:>7}",
        "pod", "name", "members", "clients"
    )?;
    for pod in c.pods.values() {
        let clients = c.clients.values().filter(|cl| cl.pod == pod.key).count();
        let name: String = pod.name.chars().take(36).collect();
        writeln!(
            out,
            "  {:<14} {:<36} {:>7} {:>7}",
            pod.key,
            name,
            pod.members.len(),
            clients
        )?;
    }
    let settings: Vec<(&str, String)> = c
        .pods
        .values()
        .filter_map(|p| Some((p.key.as_str(), pod_settings(p)?)))
        .collect();
    if !settings.is_empty() {
        writeln!(out)?;
    }
    for (key, line) in settings {
        writeln!(out, "  {key:<14} {line}")?;
    }
    let members: usize = c.pods.values().map(|p| p.members.len()).sum();
    let (clients, addresses, domains, phones) = c.table.sizes();
    writeln!(out)?;
    writeln!(
        out,
        "  {} pods, {members} members, {clients} clients, {domains} domains, \
         {addresses} addresses, {phones} phones",
        c.pods.len()
    )?;
    match &c.default_pod {
        Some(p) => writeln!(out, "  unmatched mail goes to pod {p}")?,
        None => writeln!(out, "  unmatched mail is held (no default_pod)")?,
    }
    for w in &c.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

/// `imaps://user@host:port`-style text for the summary.
fn server_line(s: &Server) -> String {
    let tls = match s.tls {
        TlsMode::Implicit => "implicit tls",
        TlsMode::Starttls => "starttls",
        TlsMode::None => "plaintext",
    };
    let user = s
        .user
        .as_deref()
        .map(|u| format!("{u} at "))
        .unwrap_or_default();
    let auth = match &s.auth {
        Auth::Password if s.password.is_some() => "password".to_owned(),
        Auth::Password if s.user.is_some() => "password not set".to_owned(),
        Auth::Password => "no auth".to_owned(),
        Auth::OAuth2(o) => match o.provider {
            Some(p) => format!("oauth2 {}", p.name()),
            None => format!("oauth2 {}", o.token_url),
        },
    };
    format!("{user}{}:{} ({tls}, {auth})", s.host, s.port)
}

/// `podrouter route`: decide each message and print the decision.
fn route(args: &RouteArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    if let Some(dir) = &args.emit {
        if config.relay.is_none() {
            bail!("--emit needs a [relay] section: it sets the From and loop marker");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        check_emit_targets(dir, &args.files)?;
    }
    // Read-only: `route` never writes the daemon's journal.
    let journal = match &args.state_dir {
        Some(dir) => Some(crate::ops::Reader::open(dir)?),
        None => None,
    };
    let threads = |ids: &[String]| {
        journal
            .as_ref()
            .and_then(|j| j.find_thread(ids).ok().flatten())
    };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for file in &args.files {
        let raw = match read_message(file) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("podrouter: {}: {e:#}", file.display());
                failed = true;
                continue;
            }
        };
        let decision = engine::decide_with(&config, &raw, &threads);
        if args.json {
            writeln!(out, "{}", decision_json(file, &decision))?;
        } else {
            write_decision(&mut out, file, &decision, &config)?;
        }
        if let (Some(dir), Action::Relay) = (&args.emit, decision.action) {
            emit_to(dir, file, &raw, &decision, &config)?;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads a message file, or standard input for `-`.
fn read_message(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut raw = Vec::new();
        std::io::stdin().read_to_end(&mut raw)?;
        return Ok(raw);
    }
    Ok(std::fs::read(file)?)
}

/// Where `--emit` writes the relayed bytes of `file`: `DIR/<its name>`,
/// `DIR/stdin.eml` for standard input.
fn emit_target(dir: &Path, file: &Path) -> PathBuf {
    match file.file_name() {
        Some(name) if file != Path::new("-") => dir.join(name),
        _ => dir.join("stdin.eml"),
    }
}

/// Refuses an `--emit` that would overwrite an input, or write two inputs
/// to one file (same name in different folders), before anything is
/// written.
fn check_emit_targets(dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    for file in files {
        let target = emit_target(dir, file);
        if let (Ok(a), Ok(b)) = (target.canonicalize(), file.canonicalize()) {
            if a == b {
                bail!(
                    "--emit {} would overwrite the input {}; choose another folder",
                    dir.display(),
                    file.display()
                );
            }
        }
        if let Some(first) = seen.insert(target.clone(), file) {
            bail!(
                "--emit: {} and {} would both be written to {}; emit them in separate runs",
                first.display(),
                file.display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// Writes the relayed bytes of one message into the `--emit` folder.
fn emit_to(
    dir: &Path,
    file: &Path,
    raw: &[u8],
    d: &Decision,
    config: &Config,
) -> anyhow::Result<()> {
    let relay = config.relay.as_ref().expect("checked before the loop");
    let pod = d.pod.as_deref().and_then(|p| config.pod(p));
    let opts = EmitOptions {
        from_mode: relay.from_mode,
        relay_from: &relay.from,
        pod_name: pod.map_or("", |p| p.name.as_str()),
    };
    let target = emit_target(dir, file);
    std::fs::write(&target, emit::relay_bytes(raw, d, &opts))
        .with_context(|| format!("writing {}", target.display()))
}

/// One decision as the JSON object `route --json` prints.
pub fn decision_json(file: &Path, d: &Decision) -> serde_json::Value {
    json!({
        "file": file.display().to_string(),
        "sender": d.sender,
        "client": d.client,
        "pod": d.pod,
        "action": d.action,
        "recipients": d.recipients,
        "reason": d.reason,
        "rule": d.rule.as_ref().map(|r| r.kind()),
        "caller": match &d.rule {
            Some(Rule::Phone(e164)) => Some(e164.as_str()),
            _ => None,
        },
        "message_id": d.message_id,
        "subject": d.subject,
    })
}

/// One decision as readable lines.
fn write_decision(
    out: &mut impl Write,
    file: &Path,
    d: &Decision,
    config: &Config,
) -> std::io::Result<()> {
    let none = "-";
    writeln!(out, "{}", file.display())?;
    writeln!(out, "  sender:     {}", d.sender.as_deref().unwrap_or(none))?;
    let client = d.client.as_deref().and_then(|c| config.clients.get(c));
    match client {
        Some(c) => writeln!(out, "  client:     {} ({})", c.key, c.name)?,
        None => writeln!(out, "  client:     {none}")?,
    }
    match d.pod.as_deref().and_then(|p| config.pod(p)) {
        Some(p) => writeln!(out, "  pod:        {} ({})", p.key, p.name)?,
        None => writeln!(out, "  pod:        {none}")?,
    }
    writeln!(out, "  action:     {}", d.action)?;
    if d.action == Action::Relay {
        writeln!(out, "  recipients: {}", d.recipients.join(", "))?;
        writeln!(out, "  rule:       {}", d.reason)?;
    } else {
        writeln!(out, "  reason:     {}", d.reason)?;
    }
    Ok(())
}

/// `podrouter who`: which client and pod an address, domain or phone maps to.
fn who(args: &WhoArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let target = args.target.trim();
    let found = if phone::looks_like_phone(target) {
        let e164 = phone::normalize(target, config.default_region.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        config.table.lookup_phone(&e164)
    } else if target.contains('@') {
        let address = crate::address::normalize_address(target).map_err(anyhow::Error::msg)?;
        config.table.lookup_address(&address)
    } else {
        let domain = crate::address::normalize_domain(target).map_err(anyhow::Error::msg)?;
        config.table.lookup_domain(&domain)
    };
    let mut out = std::io::stdout().lock();
    let Some(m) = found else {
        return Ok(match &config.default_pod {
            Some(p) => {
                writeln!(out, "client: -\npod:    {p}\nrule:   default_pod")?;
                ExitCode::SUCCESS
            }
            None => {
                writeln!(out, "no client matches {target}; mail from it is held")?;
                ExitCode::from(1)
            }
        });
    };
    let client = &config.clients[m.client];
    let pod = &config.pods[m.pod];
    writeln!(out, "client: {} ({})", client.key, client.name)?;
    writeln!(out, "pod:    {} ({})", pod.key, pod.name)?;
    writeln!(out, "rule:   {}", m.rule)?;
    Ok(ExitCode::SUCCESS)
}
