//! The routing table: an index from addresses, domains and phone numbers
//! to clients, built once at load time.

/// The lookup index built from the clients of a config.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {}
