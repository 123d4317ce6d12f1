//! Phone numbers in E.164, the one form the table and callers compare in.
//!
//! Parsing and country rules come from the `phonenumber` crate (Google's
//! libphonenumber metadata). A number written without `+country` is read
//! in `routing.default_region`. A number that parses but that the metadata
//! says no country issues (`555 0100` without an area code, `+123`) is
//! refused: the crate accepts such strings, so [`normalize`] checks
//! validity after every parse.
//!
//! [`read_caller`] reads caller ID as a PBX hands it over, where "no
//! number" comes in many spellings and a `+` may have become a space.

use phonenumber::country;
use phonenumber::Mode;

/// The longest caller ID [`read_caller`] tries to parse, in bytes: an E.164
/// number has at most 15 digits, and a PBX adds a name or an extension at
/// most. Longer input is not a number, and is never handed to the parser.
const CALLER_MAX: usize = 96;

/// Caller ID values that mean the number was withheld or never sent
/// (compared without case, after trimming).
const WITHHELD_WORDS: [&str; 11] = [
    "an unknown caller",
    "anonymous",
    "unknown",
    "unavailable",
    "restricted",
    "private",
    "withheld",
    "blocked",
    "no caller id",
    "private number",
    "unknown caller",
];

/// Twilio's stand-ins for a withheld number, which parse as real numbers
/// (`+266696687` reads as Lesotho).
const TWILIO_SENTINELS: [&str; 5] = [
    "+266696687",
    "+7378742833",
    "+86282452253",
    "+2562533",
    "+8656696",
];

/// Normalises a phone number to E.164 (`+14035550100`).
///
/// Refuses a string that is not a number, and a number that parses but is
/// not valid in its country (the `phonenumber` crate's `is_valid`).
pub fn normalize(number: &str, default_region: Option<&str>) -> Result<String, String> {
    let region = match default_region {
        Some(r) => Some(
            r.parse::<country::Id>()
                .map_err(|_| format!("unknown region {r:?}"))?,
        ),
        None => None,
    };
    let parsed = phonenumber::parse(region, number.trim())
        .map_err(|e| format!("{number:?} is not a phone number: {e}"))?;
    let e164 = parsed.format().mode(Mode::E164).to_string();
    if parsed.national().value() < 1000 || !parsed.is_valid() {
        return Err(format!(
            "{number:?} is not a valid phone number (read as {e164})"
        ));
    }
    Ok(e164)
}

/// What a caller ID string turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerId {
    /// A valid number, in E.164.
    Number(String),
    /// No number to route by: withheld, anonymous, or an internal
    /// extension. Holds why, for the reason in the journal.
    Withheld(String),
    /// Neither a number nor a known way of saying there is none.
    NotANumber(String),
}

/// Reads caller ID as a PBX or a query string hands it over.
///
/// - `"Name" <4035550100>` reads the number in the angle brackets;
/// - a value starting with a space and then a digit is read with a `+`
///   first: in a query string a bare `+` decodes as a space, so
///   `caller= 14035550100` means `+14035550100`;
/// - empty values, the words PBXs use for no number (`anonymous`, `an
///   unknown caller`, `restricted`, ...), Twilio's sentinel numbers, and
///   internal extensions of 3 to 5 digits are [`CallerId::Withheld`].
pub fn read_caller(raw: &str, default_region: Option<&str>) -> CallerId {
    if raw.len() > CALLER_MAX {
        return CallerId::NotANumber(format!(
            "caller ID of {} bytes is too long to be a number",
            raw.len()
        ));
    }
    let text = in_angle_brackets(raw).unwrap_or(raw);
    let plus_as_space =
        text.starts_with(' ') && text.trim_start().starts_with(|c: char| c.is_ascii_digit());
    let text = text.trim().trim_matches('"').trim();
    if let Some(why) = withheld(text) {
        return CallerId::Withheld(why);
    }
    let text = if plus_as_space {
        format!("+{text}")
    } else {
        text.to_string()
    };
    let compact: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if TWILIO_SENTINELS.contains(&compact.as_str()) {
        return CallerId::Withheld(format!(
            "caller ID {compact} stands in for a withheld number"
        ));
    }
    match normalize(&text, default_region) {
        Ok(e164) => CallerId::Number(e164),
        Err(e) => CallerId::NotANumber(e),
    }
}

/// Why a caller ID (trimmed, outside any brackets) carries no number.
fn withheld(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("no caller ID".into());
    }
    let lower = text.to_ascii_lowercase();
    if WITHHELD_WORDS.contains(&lower.as_str()) {
        return Some(format!("caller ID {lower:?}"));
    }
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let only_digits = text.bytes().all(|b| b.is_ascii_digit());
    if only_digits && (3..=5).contains(&digits) {
        return Some(format!("caller ID {text} is an internal extension"));
    }
    None
}

/// The text inside the last `<...>` of `"Name" <number>`, if there is one.
fn in_angle_brackets(raw: &str) -> Option<&str> {
    let open = raw.rfind('<')?;
    let rest = &raw[open + 1..];
    let close = rest.find('>')?;
    Some(&rest[..close])
}

/// Whether a string looks like a phone number rather than an address or
/// domain: digits with the usual punctuation only.
pub fn looks_like_phone(s: &str) -> bool {
    let s = s.trim();
    s.chars().filter(|c| c.is_ascii_digit()).count() >= 4
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_agree() {
        let want = "+14035550100";
        assert_eq!(normalize("+1 403 555 0100", None).unwrap(), want);
        assert_eq!(normalize("(403) 555-0100", Some("CA")).unwrap(), want);
        assert_eq!(normalize("403.555.0100", Some("US")).unwrap(), want);
        assert_eq!(normalize("+14035550100", Some("CA")).unwrap(), want);
        assert_eq!(normalize("1 (403) 555-0100", Some("CA")).unwrap(), want);
        assert_eq!(normalize("403-555-0100 x12", Some("CA")).unwrap(), want);
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert!(normalize("(403) 555-0100", None).is_err());
        assert!(normalize("hello", Some("CA")).is_err());
        assert!(normalize("12", Some("CA")).is_err());
        assert!(normalize("4035550100", Some("XX")).is_err());
    }

    #[test]
    fn numbers_that_parse_but_are_invalid_are_refused() {
        for n in ["5550100", "02079460000", "+1 123 555 0100"] {
            let e = normalize(n, Some("CA")).unwrap_err();
            assert!(e.contains("not a valid phone number"), "{n}: {e}");
        }
        assert_eq!(
            normalize("011 44 20 7946 0000", Some("CA")).unwrap(),
            "+442079460000"
        );
    }

    #[test]
    fn phone_shapes() {
        assert!(looks_like_phone("+1 403 555 0100"));
        assert!(!looks_like_phone("ana@vendor.example"));
        assert!(!looks_like_phone("sunnyvale.example"));
    }

    fn number(e164: &str) -> CallerId {
        CallerId::Number(e164.into())
    }

    #[test]
    fn callers_as_pbxs_send_them() {
        let ca = Some("CA");
        let want = number("+14035550100");
        for raw in [
            "4035550100",
            "14035550100",
            "+14035550100",
            "\"Jane Doe\" <4035550100>",
            "1 (403) 555-0100",
        ] {
            assert_eq!(read_caller(raw, ca), want, "{raw:?}");
        }
    }

    #[test]
    fn a_plus_decoded_to_a_space_is_read_as_a_plus() {
        let ca = Some("CA");
        assert_eq!(read_caller(" 14035550100", ca), number("+14035550100"));
        // Without the rule this would read as a Canadian number and fail.
        assert_eq!(read_caller(" 442079460000", ca), number("+442079460000"));
        assert_eq!(read_caller(" 442079460000", None), number("+442079460000"));
    }

    #[test]
    fn withheld_callers_are_not_numbers() {
        let ca = Some("CA");
        for raw in [
            "",
            "  ",
            "anonymous",
            "Anonymous",
            "an unknown caller",
            "\"Restricted\" <restricted>",
            "+266696687",
            "201",
            "10042",
        ] {
            assert!(
                matches!(read_caller(raw, ca), CallerId::Withheld(_)),
                "{raw:?}: {:?}",
                read_caller(raw, ca)
            );
        }
    }

    #[test]
    fn garbage_is_not_a_number() {
        let ca = Some("CA");
        for raw in ["hello", "5550100", "12ab34", &"9".repeat(200)] {
            assert!(
                matches!(read_caller(raw, ca), CallerId::NotANumber(_)),
                "{raw:?}"
            );
        }
    }
}
