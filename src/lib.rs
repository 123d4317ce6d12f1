//! podrouter routes a shared support inbox to the pod of technicians that
//! serves each client.
//!
//! The pipeline, one module per stage:
//!
//! - [`config`]: reads `routing.toml` in two stages (raw TOML, then
//!   validation into a [`config::Config`]); the same validator serves
//!   `check`, start-up and reload.
//! - [`address`]: normalises mail addresses and domains (case, IDNA).
//! - [`phone`]: normalises phone numbers to E.164.
//! - [`route`]: the routing table index and its lookup (address, domain,
//!   phone).
//! - [`sender`]: works out who sent a message (From, then Sender).
//! - [`voicemail`]: tells voicemail notifications from other mail and
//!   reads the caller's number, which routes them.
//! - [`calls`]: answers a PBX's question about a live call: which pod's
//!   hunt group to ring for this caller.
//! - [`classify`]: tells bounces, auto-replies and our own loops from mail
//!   written by people.
//! - [`engine`]: puts the stages together into one [`engine::Decision`] per
//!   message.
//! - [`ack`]: the acknowledgement that tells a client who will help.
//! - [`escalation`]: when an unanswered thread is due, on business hours.
//! - [`storm`]: holds a sender's mail past `routing.storm_limit` within
//!   `routing.storm_window` (auto-responder storms).
//! - [`emit`]: builds the exact bytes relayed to a pod.
//! - [`inbox`], [`relay`], [`journal`], [`daemon`]: the long-running
//!   service (IMAP in, SMTP out, the SQLite journal, and the loop).
//! - [`ops`]: what the operator commands read from the journal (`log`,
//!   `trace`, `held`, `stats`) and `release`, which relays held mail.
//! - [`metrics`]: the daemon's Prometheus metrics and health, shared
//!   with [`http`], which serves `/metrics`, `/healthz` and `/status`.
//! - [`oauth`]: OAuth2 access tokens (refresh, rotation) for XOAUTH2 and
//!   OAUTHBEARER sign-in on either side.
//! - [`watchdog`]: systemd watchdog pings when `WatchdogSec=` is set.
//! - [`cli`]: the `podrouter` subcommands.
#![forbid(unsafe_code)]

pub mod ack;
pub mod address;
pub mod calls;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod emit;
pub mod engine;
pub mod escalation;
pub mod http;
pub mod inbox;
pub mod journal;
pub mod metrics;
pub mod oauth;
pub mod ops;
pub mod phone;
pub mod relay;
pub mod route;
pub mod sender;
pub mod storm;
pub mod tls;
pub mod voicemail;
pub mod watchdog;
