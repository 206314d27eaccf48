//! Config problems, each with the file, the line (when known) and the key.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load, reported together.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} configuration problem{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems for one file, finding line numbers for semantic errors by key.
pub struct Problems<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub out: &'a mut Vec<ConfigError>,
}

impl Problems<'_> {
    /// Records a problem at the first line where `key:` appears after the line of `anchor`
    /// (a distinctive `key: value` text such as `name: hr`), or anywhere if no anchor.
    pub fn at(&mut self, anchor: Option<&str>, key: &str, message: impl Into<String>) {
        let line = locate(self.text, anchor, key.rsplit('.').next().unwrap_or(key));
        self.out.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }
}

impl Problems<'_> {
    /// Like [`Problems::at`], but on the first line (after `anchor`) that has both
    /// `last_key:` and `value`, so a problem in the second of two same-named keys (two
    /// `regex:` in one policy) points at its own line.
    pub fn at_value(&mut self, anchor: Option<&str>, key: &str, value: &str, message: impl Into<String>) {
        let last = key.rsplit('.').next().unwrap_or(key);
        let line = locate_value(self.text, anchor, last, value).or_else(|| locate(self.text, anchor, last));
        self.out.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }
}

fn locate_value(text: &str, anchor: Option<&str>, last_key: &str, value: &str) -> Option<usize> {
    let start = match anchor {
        Some(a) => text.lines().position(|l| l.contains(a))?,
        None => 0,
    };
    let needle = format!("{last_key}:");
    let mut in_key = false;
    for (i, l) in text.lines().enumerate().skip(start) {
        let code = l.split(" #").next().unwrap_or(l);
        if code.contains(&needle) {
            in_key = true;
        }
        // A block list's items follow the key on lines of their own.
        if in_key && code.contains(value) {
            return Some(i + 1);
        }
        if in_key && !code.contains(&needle) && !code.trim_start().starts_with("- ") {
            in_key = false;
        }
    }
    None
}

/// 1-based line of the first `last_key:` (or `last_key` as a flow-map key) at or after
/// the line containing `anchor`.
pub fn locate(text: &str, anchor: Option<&str>, last_key: &str) -> Option<usize> {
    let start = match anchor {
        Some(a) => text.lines().position(|l| l.contains(a))?,
        None => 0,
    };
    let needle = format!("{last_key}:");
    text.lines()
        .enumerate()
        .skip(start)
        .find(|(_, l)| {
            let code = l.split(" #").next().unwrap_or(l);
            code.trim_start().trim_start_matches("- ").starts_with(&needle)
                || code.contains(&format!("{{ {needle}"))
                || code.contains(&format!(", {needle}"))
                || code.contains(&format!("{{{needle}"))
        })
        .map(|(i, _)| i + 1)
        .or(if anchor.is_some() { Some(start + 1) } else { None })
}

/// Turns a serde error (with its path) into a positioned problem.
pub fn from_serde(
    file: &Path,
    text: &str,
    err: serde_path_to_error::Error<serde_norway::Error>,
) -> ConfigError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut line = inner.location().map(|l| l.line());
    // Errors raised inside a value's own Deserialize (`${VAR}` expansion) carry no
    // position of their own: find the key's line instead.
    let msg = inner.to_string();
    if msg.contains("environment variable") || msg.contains("`${") || msg.contains("valid environment variable") {
        let last = path.rsplit('.').next().unwrap_or(&path);
        let last = last.split('[').next().unwrap_or(last);
        line = locate(text, None, last).or(line);
    }
    let mut message = inner.to_string();
    // serde_norway appends " at line X column Y"; we print the line ourselves.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    ConfigError {
        file: file.to_path_buf(),
        line,
        key: if path == "." || path.is_empty() { None } else { Some(path) },
        message,
    }
}
