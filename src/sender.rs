//! Who sent a message: the single mailbox in From, else Sender.
//!
//! Reply-To never decides routing: anybody can write any Reply-To. With
//! group syntax the group's first member counts. The address inside the
//! angle brackets decides, never the display name, so a name such as
//! `"clerk@town.example" <someone@elsewhere.example>` routes by
//! `someone@elsewhere.example`.

use mail_parser::{Address, HeaderName, Message, MessageParser};

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
    from_header(msg, HeaderName::From).or_else(|| from_header(msg, HeaderName::Sender))
}

/// The sender named by one header (the first of that name).
///
/// A header with raw 8-bit bytes that are not UTF-8 was written by legacy
/// software in a single-byte charset; it is read as Latin-1 (which
/// Windows-1252 extends) rather than with replacement characters, so a
/// name like "François" survives into the rewritten From.
fn from_header(msg: &Message<'_>, name: HeaderName<'_>) -> Option<Sender> {
    let header = msg.headers().iter().find(|h| h.name == name)?;
    let start = header.offset_start as usize;
    let end = header.offset_end as usize;
    let raw = msg.raw_message().get(start..end).unwrap_or_default();
    if std::str::from_utf8(raw).is_ok() {
        return header.value().as_address().and_then(first_usable);
    }
    let latin1: String = raw.iter().map(|&b| char::from(b)).collect();
    let reparsed = format!("From:{latin1}\r\n\r\n");
    let msg = MessageParser::default().parse(reparsed.as_bytes())?;
    msg.from().and_then(first_usable)
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
    fn latin1_names_are_not_mangled() {
        let raw = b"From: Fran\xe7ois <f@town.example>\r\nSubject: t\r\n\r\nbody\r\n";
        let msg = MessageParser::default().parse(&raw[..]).unwrap();
        let s = find(&msg).unwrap();
        assert_eq!(s.name.as_deref(), Some("François"));
        assert_eq!(s.address, "f@town.example");
    }

    #[test]
    fn reply_to_never_routes() {
        assert!(sender_of("Reply-To: clerk@town.example").is_none());
    }
}
