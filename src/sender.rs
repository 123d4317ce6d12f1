//! Who sent a message: the single mailbox in From, else Sender.
//!
//! Reply-To never decides routing: anybody can write any Reply-To. With
//! group syntax the group's first member counts. The address inside the
//! angle brackets decides, never the display name, so a name such as
//! `"clerk@town.example" <someone@elsewhere.example>` routes by
//! `someone@elsewhere.example`.

use mail_parser::{Address, Message};

use crate::address::normalize_address;

/// The sender of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The normalised address (lowercase, A-label domain).
    pub address: String,
    /// The display name as decoded from the header, if any.
    pub name: Option<String>,
}

/// Finds the sender: the first usable mailbox in From, else in Sender.
pub fn find(msg: &Message<'_>) -> Option<Sender> {
    msg.from()
        .and_then(first_usable)
        .or_else(|| msg.sender().and_then(first_usable))
}

/// The first mailbox of an address list or group whose address parses.
fn first_usable(list: &Address<'_>) -> Option<Sender> {
    list.iter().find_map(|addr| {
        let address = normalize_address(addr.address()?).ok()?;
        let name = addr
            .name()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        Some(Sender { address, name })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn sender_of(headers: &str) -> Option<Sender> {
        let raw = format!("{headers}\r\nSubject: t\r\n\r\nbody\r\n");
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        find(&msg)
    }

    #[test]
    fn encoded_comma_is_one_sender() {
        let s = sender_of("From: =?utf-8?q?Ruiz=2C_Ana?= <Ana@Town.Example>").unwrap();
        assert_eq!(s.address, "ana@town.example");
        assert_eq!(s.name.as_deref(), Some("Ruiz, Ana"));
    }

    #[test]
    fn angle_address_beats_name() {
        let s = sender_of("From: \"clerk@town.example\" <x@other.example>").unwrap();
        assert_eq!(s.address, "x@other.example");
    }

    #[test]
    fn group_first_member() {
        let s = sender_of("From: Council: a@one.example, b@two.example;").unwrap();
        assert_eq!(s.address, "a@one.example");
    }

    #[test]
    fn sender_when_from_is_unusable() {
        let s = sender_of("From: undisclosed\r\nSender: clerk@town.example").unwrap();
        assert_eq!(s.address, "clerk@town.example");
        assert!(sender_of("From: nobody at all").is_none());
    }

    #[test]
    fn reply_to_never_routes() {
        assert!(sender_of("Reply-To: clerk@town.example").is_none());
    }
}
