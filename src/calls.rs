//! Live calls: which pod's hunt group a PBX should ring for a caller.
//!
//! [`lookup`] is pure: the caller ID as the PBX sent it and the table in,
//! an [`Answer`] out. It is what `GET /v1/route?caller=...` serves, and a
//! PBX reads it with Asterisk's `JSON_DECODE` or a FreeSWITCH script.
//!
//! - A caller a client lists: that client and its pod, rule `phone`.
//! - Any other number, or a withheld one (`anonymous`, an extension, ...):
//!   `routing.default_pod`, rule `default`; without a default pod, a
//!   "not found" answer ([`Outcome::NotFound`]) that says so.
//! - A caller that is not a number at all: [`Outcome::BadCaller`].
//!
//! `phone` is the pod's hunt group (`[pods.KEY] phone`) in E.164, always a
//! JSON string: Asterisk reads JSON integers through a C `int`, which a
//! phone number overflows.

use serde::Serialize;

use crate::config::Config;
use crate::engine::Rule;
use crate::phone::{self, CallerId};

/// The answer to a caller lookup, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The client's key, when the caller's number is one a client lists.
    pub client: Option<String>,
    /// The pod's key: the client's pod, or `routing.default_pod`.
    pub pod: Option<String>,
    /// The pod's hunt group in E.164, when the pod has one.
    pub phone: Option<String>,
    /// `phone` (the caller's number matched) or `default`.
    pub rule: Option<&'static str>,
    /// The caller in E.164; `null` when withheld.
    pub caller: Option<String>,
    /// Why there is no pod, for a not-found or bad-caller answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a lookup ended; it sets the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A pod was found (by the caller's number, or the default pod).
    Found,
    /// No client lists the caller and there is no default pod.
    NotFound,
    /// The caller is not a phone number.
    BadCaller,
}

impl Outcome {
    /// The HTTP status for this outcome: 200, 404 or 400.
    pub fn http_status(self) -> u16 {
        match self {
            Outcome::Found => 200,
            Outcome::NotFound => 404,
            Outcome::BadCaller => 400,
        }
    }
}

/// A lookup's outcome and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Found, not found or a bad caller.
    pub outcome: Outcome,
    /// What to send back.
    pub answer: Answer,
}

/// Answers which pod serves a caller, given caller ID as a PBX sends it.
pub fn lookup(config: &Config, caller: &str) -> Lookup {
    let (e164, unknown) = match phone::read_caller(caller, config.default_region.as_deref()) {
        CallerId::Number(e164) => {
            if let Some(m) = config.table.lookup_phone(&e164) {
                let answer = answer(config, Some(m.client), m.pod, &m.rule, Some(e164));
                return found(answer);
            }
            let why = format!("no client lists {e164}");
            (Some(e164), why)
        }
        CallerId::Withheld(why) => (None, why),
        CallerId::NotANumber(why) => {
            return Lookup {
                outcome: Outcome::BadCaller,
                answer: empty(None, format!("caller is not a phone number: {why}")),
            }
        }
    };
    match &config.default_pod {
        Some(pod) => found(answer(config, None, pod, &Rule::Default, e164)),
        None => Lookup {
            outcome: Outcome::NotFound,
            answer: empty(
                e164,
                format!("not found: {unknown}, and there is no default_pod"),
            ),
        },
    }
}

/// A found answer.
fn found(answer: Answer) -> Lookup {
    Lookup {
        outcome: Outcome::Found,
        answer,
    }
}

/// The answer naming a pod and its hunt group.
fn answer(
    config: &Config,
    client: Option<&str>,
    pod: &str,
    rule: &Rule,
    caller: Option<String>,
) -> Answer {
    Answer {
        client: client.map(str::to_string),
        pod: Some(pod.to_string()),
        phone: config.pod(pod).and_then(|p| p.phone.clone()),
        rule: Some(rule.kind()),
        caller,
        error: None,
    }
}

/// An answer without a pod.
fn empty(caller: Option<String>, error: String) -> Answer {
    Answer {
        client: None,
        pod: None,
        phone: None,
        rule: None,
        caller,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(default_pod: bool) -> Config {
        let default = if default_pod {
            "default_pod = \"triage\"\n"
        } else {
            ""
        };
        let text = format!(
            "[routing]\ndefault_region = \"CA\"\n{default}\
             [pods.alberta]\nmembers = [\"ana@vendor.example\"]\nphone = \"+1 403 555 0199\"\n\
             [pods.triage]\nmembers = [\"tom@vendor.example\"]\nphone = \"(403) 555-0150\"\n\
             [clients.sunnyvale]\npod = \"alberta\"\nphones = [\"+1 403 555 0100\"]\n"
        );
        crate::config::from_str(&text, Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn a_listed_caller_gets_its_pods_hunt_group() {
        let c = config(false);
        for caller in [
            "+14035550100",
            " 14035550100",
            "4035550100",
            "\"Jane\" <4035550100>",
        ] {
            let l = lookup(&c, caller);
            assert_eq!(l.outcome, Outcome::Found, "{caller:?}");
            let json = serde_json::to_value(&l.answer).unwrap();
            assert_eq!(
                json,
                serde_json::json!({
                    "client": "sunnyvale",
                    "pod": "alberta",
                    "phone": "+14035550199",
                    "rule": "phone",
                    "caller": "+14035550100",
                }),
                "{caller:?}"
            );
        }
    }

    #[test]
    fn unknown_callers_get_the_default_pod() {
        let c = config(true);
        let l = lookup(&c, "+14035550111");
        assert_eq!(l.outcome, Outcome::Found);
        assert_eq!(l.answer.pod.as_deref(), Some("triage"));
        assert_eq!(l.answer.phone.as_deref(), Some("+14035550150"));
        assert_eq!(l.answer.rule, Some("default"));
        assert_eq!(l.answer.client, None);
        assert_eq!(l.answer.caller.as_deref(), Some("+14035550111"));

        let l = lookup(&c, "anonymous");
        assert_eq!(l.outcome, Outcome::Found);
        assert_eq!(l.answer.caller, None);
    }

    #[test]
    fn without_a_default_pod_an_unknown_caller_is_not_found() {
        let c = config(false);
        let l = lookup(&c, "+14035550111");
        assert_eq!(l.outcome, Outcome::NotFound);
        assert_eq!(l.outcome.http_status(), 404);
        let error = l.answer.error.unwrap();
        assert!(error.starts_with("not found"), "{error}");
        assert_eq!(l.answer.pod, None);
    }

    #[test]
    fn a_caller_that_is_not_a_number_is_a_bad_request() {
        let c = config(true);
        for caller in ["hello", "5550100", "+1 123 555 0100"] {
            let l = lookup(&c, caller);
            assert_eq!(l.outcome, Outcome::BadCaller, "{caller:?}");
            assert_eq!(l.outcome.http_status(), 400);
        }
    }
}
