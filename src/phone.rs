//! Phone numbers in E.164, the one form the table and callers compare in.
//!
//! Parsing and country rules come from the `phonenumber` crate (Google's
//! libphonenumber metadata). A number written without `+country` is read
//! in `routing.default_region`.

use phonenumber::country;
use phonenumber::Mode;

/// Normalises a phone number to E.164 (`+14035550100`).
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
    let national = parsed.national().value();
    if national < 1000 {
        return Err(format!("{number:?} is too short to be a phone number"));
    }
    Ok(parsed.format().mode(Mode::E164).to_string())
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
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert!(normalize("(403) 555-0100", None).is_err());
        assert!(normalize("hello", Some("CA")).is_err());
        assert!(normalize("12", Some("CA")).is_err());
        assert!(normalize("4035550100", Some("XX")).is_err());
    }

    #[test]
    fn phone_shapes() {
        assert!(looks_like_phone("+1 403 555 0100"));
        assert!(!looks_like_phone("ana@vendor.example"));
        assert!(!looks_like_phone("sunnyvale.example"));
    }
}
