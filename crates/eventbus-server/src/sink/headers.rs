//! The push sink's extra headers and where they may come from.
//!
//! Secret headers (`Authorization`, `Cookie`, `X-Api-Key`, any name
//! [`eventbus::is_secret_name`] calls secret) come from a file
//! (`--http-headers-file`) or the environment (`EVENT_BUS_HTTP_HEADERS`),
//! never from a flag: the command line of a process shows in `ps` to every
//! user of the machine. `--http-header NAME=VALUE` stays for the others.
//!
//! Files and the variable hold one header per line, `Name: value` (or
//! `NAME=VALUE`); blank lines and lines starting with `#` are skipped. No
//! error repeats a value.

use crate::error::{CliError, Result};

/// The largest headers file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Where a header was given, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// `--http-header` on the command line (the `n`th, from 1).
    Flag(usize),
    /// A `consume` flag in a `serve --consumers` file, which is not
    /// visible in `ps`: secrets are allowed.
    ConsumersFile(usize),
    /// Line `n` of `--http-headers-file PATH`.
    File(&'a str, usize),
    /// Line `n` of `EVENT_BUS_HTTP_HEADERS`.
    Env(usize),
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(n) | Source::ConsumersFile(n) => write!(f, "--http-header #{n}"),
            Source::File(path, n) => write!(f, "--http-headers-file {path} line {n}"),
            Source::Env(n) => write!(f, "EVENT_BUS_HTTP_HEADERS line {n}"),
        }
    }
}

/// A header token (RFC 9110 §5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Parses one header, `Name: value` or `NAME=VALUE`, checked to be sendable.
/// A secret name given as a command-line flag is refused.
pub(crate) fn parse_one(text: &str, source: Source<'_>) -> Result<(String, String)> {
    let refuse = |why: String| CliError::Input(format!("{source}: {why}"));
    let Some(split) = text.find([':', '=']) else {
        return Err(refuse(
            "expected NAME=VALUE or `Name: value` (the text is not shown: it may be a secret)"
                .into(),
        ));
    };
    let name = text[..split].trim();
    let value = text[split + 1..].trim();
    if !is_token(name) {
        return Err(refuse(
            "the name is not a header name (letters, digits and !#$%&'*+-.^_`|~)".into(),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(refuse(format!(
            "the value of {name} holds control characters"
        )));
    }
    if matches!(source, Source::Flag(_)) && eventbus::is_secret_name(name) {
        return Err(refuse(format!(
            "{name} carries a secret, and flags show in `ps` to every user of the machine: \
             put it in a file given with --http-headers-file FILE, or in EVENT_BUS_HTTP_HEADERS \
             (one `Name: value` line per header)"
        )));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses the headers of a file's or variable's text, one per line.
pub(crate) fn parse_lines<'a>(
    text: &str,
    source: impl Fn(usize) -> Source<'a>,
) -> Result<Vec<(String, String)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| parse_one(l, source(i + 1)))
        .collect()
}

/// Reads `--http-headers-file` (at most 64 KiB).
pub(crate) fn read_file(path: &str) -> Result<Vec<(String, String)>> {
    use std::io::Read;
    let read_error = |source| CliError::ReadFile {
        what: "--http-headers-file",
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(CliError::Input(format!(
            "--http-headers-file {path}: larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    parse_lines(&text, |n| Source::File(path, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "SENTINEL";

    #[test]
    fn flags_take_plain_headers_and_refuse_secrets_without_echoing_them() {
        assert_eq!(
            parse_one("X-Tenant=acme", Source::Flag(1)).unwrap(),
            ("X-Tenant".into(), "acme".into())
        );
        for secret in [
            "Authorization=Bearer SENTINEL",
            "authorization: Bearer SENTINEL",
            "X-Api-Key=SENTINEL",
            "Cookie=a=SENTINEL",
            "X-Auth-Token=SENTINEL",
            "Proxy-Authorization=Basic SENTINEL",
        ] {
            let e = parse_one(secret, Source::Flag(2)).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("--http-headers-file"), "{m}");
            assert!(!m.contains(S), "{m}");
            assert_eq!(e.exit_code(), 2);
            // the same header is fine from a file or a consumers file
            assert!(parse_one(secret, Source::File("f", 1)).is_ok());
            assert!(parse_one(secret, Source::ConsumersFile(1)).is_ok());
        }
        for bad in [
            "Authorization Bearer SENTINEL",
            "bad name=SENTINEL",
            "X-Ok=SENTI\u{1}NEL",
        ] {
            let m = parse_one(bad, Source::Flag(1)).unwrap_err().to_string();
            assert!(!m.contains(S), "{m}");
            assert!(m.starts_with("--http-header #1: "), "{m}");
        }
    }

    #[test]
    fn lines_skip_blanks_and_comments_and_name_the_bad_line() {
        let text = "# for the CRM\nAuthorization: Bearer SENTINEL\n\nX-Tenant: acme\n";
        let headers = parse_lines(text, Source::Env).unwrap();
        assert_eq!(
            headers,
            [
                ("Authorization".into(), "Bearer SENTINEL".into()),
                ("X-Tenant".into(), "acme".into())
            ]
        );
        let m = parse_lines("X-Ok: 1\nnope SENTINEL\n", Source::Env)
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("EVENT_BUS_HTTP_HEADERS line 2: "), "{m}");
        assert!(!m.contains(S), "{m}");
    }
}
