//! serde_json's errors in generic words: where (line, column) and what kind of problem,
//! never a fragment of the input. serde quotes the offending input in many messages
//! (``unknown variant `…` ``, `invalid type: string "…"`); a plaintext token pasted into
//! the wrong field must not reach a log line or the public `/ready`. So nothing of
//! serde's message is passed on but the parts the code wrote: the expectation after the
//! last `, expected ` (serde writes it after the input) and known field names.

use serde_json::error::Category;

/// Field names of the token file, the only names an error may repeat.
const KNOWN_FIELDS: [&str; 8] = [
    "version",
    "generation",
    "tokens",
    "name",
    "sha256",
    "state",
    "notBefore",
    "expiresAt",
];

/// What serde_json found wrong, without its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonProblem {
    pub kind: &'static str,
    pub line: usize,
    pub column: usize,
    pub detail: String,
}

impl JsonProblem {
    pub fn of(error: &serde_json::Error) -> Self {
        let kind = match error.classify() {
            Category::Io => "read error",
            Category::Syntax => "syntax error",
            Category::Data => "wrong field or value",
            Category::Eof => "unexpected end, the file looks truncated",
        };
        let message = error.to_string();
        // serde_json appends " at line L column C"; the position is kept as numbers.
        let message = match message.rfind(" at line ") {
            Some(at) => &message[..at],
            None => message.as_str(),
        };
        let detail = match error.classify() {
            Category::Data => describe_data(message),
            Category::Syntax | Category::Eof => describe_syntax(message),
            Category::Io => "the file could not be read".to_owned(),
        };
        Self {
            kind,
            line: error.line(),
            column: error.column(),
            detail,
        }
    }
}

fn describe_data(message: &str) -> String {
    let with_expectation = |what: &str| match expectation(message) {
        Some(expected) => format!("{what}; expected {expected}"),
        None => what.to_owned(),
    };
    if message.starts_with("unknown variant") {
        with_expectation("a value that is not one of the allowed ones")
    } else if message.starts_with("unknown field") {
        with_expectation("a field this version does not know")
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        match known_field(rest) {
            Some(field) => format!("the field `{field}` is missing"),
            None => "a required field is missing".to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("duplicate field ") {
        match known_field(rest) {
            Some(field) => format!("the field `{field}` appears twice"),
            None => "a field appears twice".to_owned(),
        }
    } else if message.starts_with("invalid type") {
        with_expectation("a value of the wrong type")
    } else if message.starts_with("invalid length") {
        with_expectation("a list or text of the wrong length")
    } else if message.starts_with("invalid value") {
        with_expectation("a value out of range")
    } else if message.starts_with("`sha256` must be 64 hex digits") {
        "`sha256` must be 64 hex digits, the SHA-256 of the token and never the token itself"
            .to_owned()
    } else if CHRONO_MESSAGES.iter().any(|m| message.starts_with(m)) {
        "a timestamp that is not RFC 3339 (like 2026-11-22T10:00:00Z)".to_owned()
    } else {
        "a value this field does not take".to_owned()
    }
}

/// chrono's parse errors (`chrono::format::ParseError`), all free of input.
const CHRONO_MESSAGES: [&str; 7] = [
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
    "bad or unsupported format string",
];

/// serde_json's syntax messages (its `ErrorCode`), none of which quotes input; anything
/// else is described generically.
const SYNTAX_MESSAGES: [&str; 22] = [
    "EOF while parsing a list",
    "EOF while parsing an object",
    "EOF while parsing a string",
    "EOF while parsing a value",
    "expected `:`",
    "expected `,` or `]`",
    "expected `,` or `}`",
    "expected ident",
    "expected value",
    "expected `\"`",
    "invalid escape",
    "invalid number",
    "number out of range",
    "invalid unicode code point",
    "control character (\\u0000-\\u001F) found while parsing a string",
    "key must be a string",
    "lone leading surrogate in hex escape",
    "trailing comma",
    "trailing characters",
    "unexpected end of hex escape",
    "recursion limit exceeded",
    "invalid type: map, expected a string key",
];

fn describe_syntax(message: &str) -> String {
    match SYNTAX_MESSAGES.iter().find(|m| message == **m) {
        Some(known) => (*known).to_owned(),
        None => "malformed JSON".to_owned(),
    }
}

/// What serde says it expected: the text after the last `, expected `, which serde writes
/// after any quoted input. Kept only when it is short and made of the characters serde's
/// expectations use.
fn expectation(message: &str) -> Option<&str> {
    let at = message.rfind(", expected ")?;
    let expected = &message[at + ", expected ".len()..];
    let plain = expected.len() <= 120
        && expected
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " `,_-".contains(c));
    plain.then_some(expected)
}

/// The field name in `` `name` `` at the start of `rest`, when it is one of the file's.
fn known_field(rest: &str) -> Option<&'static str> {
    let name = rest.strip_prefix('`')?.strip_suffix('`')?;
    KNOWN_FIELDS.iter().copied().find(|known| *known == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> JsonProblem {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Probe {
            state: crate::file::TokenState,
        }
        JsonProblem::of(&serde_json::from_str::<Probe>(json).unwrap_err())
    }

    #[test]
    fn unknown_variant_names_the_allowed_values_not_the_input() {
        let p = problem(r#"{"state": "vx11_pasted_token_value"}"#);
        assert_eq!(p.kind, "wrong field or value");
        assert_eq!(
            p.detail,
            "a value that is not one of the allowed ones; expected one of `active`, `retiring`, `staged`"
        );
        assert_eq!((p.line, p.column), (1, 35));
    }

    #[test]
    fn input_that_imitates_serde_is_not_repeated() {
        let p = problem(r#"{"state": "x`, expected vx11_pasted_token_value"}"#);
        assert!(!format!("{p:?}").contains("vx11_pasted"), "{p:?}");
        let p = problem(r#"{"vx11_pasted_token_value": 1}"#);
        assert!(!format!("{p:?}").contains("vx11_pasted"), "{p:?}");
        assert!(p.detail.starts_with("a field this version does not know"));
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(problem("{}").detail, "the field `state` is missing");
    }

    #[test]
    fn syntax_errors_keep_serdes_words() {
        assert_eq!(problem("{\"state\" 1}").detail, "expected `:`");
        assert_eq!(
            problem("{\"state\": \"a").detail,
            "EOF while parsing a string"
        );
    }
}
