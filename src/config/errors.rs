//! [`ConfigError`] and how refused values are shown in it: compact JSON, cut
//! to a readable length, and never holding the token.

use std::cell::RefCell;
use std::fmt;

use serde_json::Value;

use super::secret::{Secret, REDACTED};

/// Longest value shown in an error message, in characters.
const SHOW_MAX_CHARS: usize = 60;

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `servers[1]` or `timeout.wait`;
    /// empty for an error about the whole document.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with the token removed from both parts.
    pub(crate) fn scrubbed(self, token: &Secret) -> ConfigError {
        ConfigError {
            field: token.scrub(&self.field),
            message: token.scrub(&self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

thread_local! {
    /// The token of the document being parsed, so that [`show`] can hide a
    /// value that contains it (pasted into another field) before the value
    /// is escaped or cut, which would defeat the scrubbing of the final text.
    static PARSING_TOKEN: RefCell<Secret> = RefCell::new(Secret::default());
}

/// Makes [`show`] hide values holding `token` until dropped.
pub(crate) struct TokenGuard;

impl TokenGuard {
    pub(crate) fn set(token: &Secret) -> TokenGuard {
        PARSING_TOKEN.with(|t| *t.borrow_mut() = token.clone());
        TokenGuard
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        PARSING_TOKEN.with(|t| *t.borrow_mut() = Secret::default());
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON of a value for an error message, cut to [`SHOW_MAX_CHARS`].
pub(crate) fn show(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| type_name(v).to_string());
    if PARSING_TOKEN.with(|t| t.borrow().appears_in(&text)) {
        return format!("\"{REDACTED}\"");
    }
    truncate(text)
}

pub(crate) fn show_str(s: &str) -> String {
    show(&Value::String(s.to_string()))
}

fn truncate(text: String) -> String {
    if text.chars().count() <= SHOW_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SHOW_MAX_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

pub(crate) fn invalid_json(e: &serde_json::Error) -> ConfigError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&suffix).unwrap_or(&full);
    ConfigError::new(
        "config",
        format!(
            "invalid JSON at line {} column {}: {what}",
            e.line(),
            e.column()
        ),
    )
}
