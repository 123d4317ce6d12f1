//! The `podrouter` subcommands.
