//! What the operator commands print: `log`, `trace`, `held`, `release`,
//! `stats`, and the hidden `manpage`.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::CommandFactory;

use super::{
    init_logging, ActionArg, Cli, HeldArgs, LogArgs, ManpageArgs, ReleaseArgs, StatsArgs, TraceArgs,
};
use crate::config::{self, Config};
use crate::ops::hold::{self, ReleaseRequest, Released};
use crate::ops::{log, stats, trace, OpsError, Reader};

/// `podrouter log`.
pub(super) fn show_log(args: &LogArgs) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(&args.state.state_dir()?)?;
    let filter = log::Filter {
        since: args.since.map(|s| s.cutoff(SystemTime::now())),
        pod: args.pod.clone(),
        client: args.client.clone(),
        action: args.action.map(|a| {
            match a {
                ActionArg::Relay => "relay",
                ActionArg::Skip => "skip",
                ActionArg::Hold => "hold",
            }
            .to_owned()
        }),
        limit: args.limit,
    };
    let entries = reader.log(&filter)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        log::write_json(&mut out, &entries)?;
    } else if entries.is_empty() {
        eprintln!("no decisions match");
    } else {
        log::write_table(&mut out, &entries)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `podrouter trace`.
pub(super) fn show_trace(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(&args.state.state_dir()?)?;
    let (target, entries) = reader.trace(&args.target, args.limit)?;
    if entries.is_empty() {
        let what = match &target {
            trace::Target::MessageId(id) => format!("Message-ID <{id}>"),
            trace::Target::Sender(s) => format!("mail from {s}"),
        };
        eprintln!("the journal has no {what}");
        return Ok(ExitCode::from(1));
    }
    let mut out = std::io::stdout().lock();
    trace::write_story(&mut out, &target, &entries)?;
    Ok(ExitCode::SUCCESS)
}

/// `podrouter held`.
pub(super) fn show_held(args: &HeldArgs) -> anyhow::Result<ExitCode> {
    let (config, state_dir) = args.state.config_and_state()?;
    let folder = hold_folder(&config)?;
    let reader = match Reader::open(&state_dir) {
        Ok(r) => Some(r),
        Err(OpsError::NoJournal { .. }) if !args.offline => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if args.offline {
        let reader = reader.expect("opened above");
        let entries = reader.held(&folder, 0)?;
        if entries.is_empty() {
            eprintln!("the journal filed nothing in {folder} that is still there");
        } else {
            hold::write_held_offline(&mut out, &entries)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    init_logging();
    let runtime = runtime()?;
    let held = runtime.block_on(hold::list_held(&config, reader.as_ref()))?;
    if held.is_empty() {
        eprintln!("{folder} is empty");
    } else {
        hold::write_held(&mut out, &held)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table's `hold_folder`.
fn hold_folder(config: &Config) -> anyhow::Result<String> {
    config
        .inbox
        .as_ref()
        .map(|i| i.hold_folder.clone())
        .with_context(|| format!("{} has no [inbox]", config.path.display()))
}

/// `podrouter release`.
pub(super) fn release(args: &ReleaseArgs) -> anyhow::Result<ExitCode> {
    let (config, state_dir) = args.state.config_and_state()?;
    init_logging();
    let by = hold::operator();
    let req = ReleaseRequest {
        config: &config,
        state_dir: &state_dir,
        uid: args.uid,
        pod: &args.pod,
        by: &by,
    };
    let done = runtime()?.block_on(hold::release(&req))?;
    let mut out = std::io::stdout().lock();
    match done {
        Released::Relayed {
            id,
            accepted,
            refused,
            reply,
            folder,
        } => {
            writeln!(
                out,
                "released UID {} to pod {} as {by}: accepted by {}",
                args.uid,
                args.pod,
                accepted.join(", ")
            )?;
            for (rcpt, why) in &refused {
                writeln!(out, "refused by the relay for {rcpt}: {why}")?;
            }
            if !reply.is_empty() {
                let queue =
                    trace::queue_id(&reply).map_or(String::new(), |q| format!(" (queue id {q})"));
                writeln!(out, "relay reply: {reply}{queue}")?;
            }
            writeln!(out, "moved to {folder}; journal entry #{id}")?;
        }
        Released::AlreadyRelayed {
            id,
            duplicate_of,
            folder,
        } => {
            let of = duplicate_of.map_or(String::new(), |d| format!(" as journal entry #{d}"));
            writeln!(
                out,
                "UID {} was relayed already{of}; not relayed again, only moved to {folder} \
                 (journal entry #{id})",
                args.uid
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `podrouter stats`.
pub(super) fn show_stats(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    // The table names the pods (a pod with no mail is the least busy);
    // with --state-dir a table that cannot be read is done without.
    let config: Option<Config> = if args.state.state_dir.is_some() {
        config::load(&args.state.config.resolve()).ok()
    } else {
        Some(args.state.config.load()?)
    };
    let state_dir = args.state.state_dir()?;
    let reader = Reader::open(&state_dir)?;
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let weeks = reader.week_starts(&now, args.weeks)?;
    let counts = reader.relay_counts(&weeks[0])?;
    let table_pods: Vec<String> = config
        .as_ref()
        .map(|c| c.pods.keys().cloned().collect())
        .unwrap_or_default();
    let s = stats::Stats::new(weeks, &table_pods, &counts);
    let movable = if config.is_some() {
        table_pods.clone()
    } else {
        s.pods.clone()
    };
    let mut out = std::io::stdout().lock();
    stats::write_stats(&mut out, &s, &movable)?;
    let answered = reader.first_responses(&s.weeks[0])?;
    let waiting = reader.waiting_threads()?;
    let responses = stats::responses(&table_pods, &answered, &waiting);
    stats::write_responses(&mut out, &responses, &waiting)?;
    Ok(ExitCode::SUCCESS)
}

/// The sections the main man page adds after the commands (roff).
const MAN_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB1\fR
Bad input or config, or the command could not do its work (for \fBwho\fR,
nothing matched; for \fBtrace\fR, the journal knows nothing of it; for
\fBrelease\fR, the relay did not take the message).
.TP
\fB2\fR
Usage error.
.SH FILES
.TP
\fI/etc/podrouter/routing.toml\fR
The routing table: inbox, relay, pods and clients. \fBpodrouter check\fR
validates it.
.TP
\fI/var/lib/podrouter/journal.sqlite3\fR
The journal of every message handled (\fBdaemon.state_dir\fR in the table).
.SH ENVIRONMENT
.TP
\fBPODROUTER_CONFIG\fR
The routing table, when \fB\-c\fR is not given.
.TP
\fBPODROUTER_STATE_DIR\fR
The journal's folder, when \fB\-\-state\-dir\fR is not given.
.TP
\fBRUST_LOG\fR
How much \fBpodrouter run\fR logs, e.g. \fBpodrouter=debug\fR.
.TP
\fBSUDO_USER\fR, \fBUSER\fR
Who \fBpodrouter release\fR records as having released a message.
"#;

/// `podrouter manpage DIR`: podrouter.1 and one page per visible command.
pub(super) fn manpage(args: &ManpageArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        clap_mangen::Man::new(sub.clone())
            .source(concat!("podrouter ", env!("CARGO_PKG_VERSION")))
            .generate_to(dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?;
    }
    let path = dir.join("podrouter.1");
    write_main_page(&cmd, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The main page: clap's sections, then exit status, files, environment.
fn write_main_page(cmd: &clap::Command, path: &std::path::Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(MAN_SECTIONS.as_bytes());
    man.render_version_section(&mut out)?;
    std::fs::write(path, out)
}

/// A single-threaded runtime for one command's IMAP and SMTP work.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
