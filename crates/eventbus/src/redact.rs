//! Hiding secrets in text that may reach an error message, a log line or
//! help output. [`redact`] is the one function every such path uses (URLs,
//! DSNs, headers and whole messages alike); [`is_secret_name`] says which
//! names carry secrets.
//!
//! What is hidden, each replaced by `***`:
//! - the password of a URL's user info (`redis://user:***@host`), also
//!   when the URL is malformed (a password with an unescaped `/` or `@`);
//! - the value of any `name=value` or `name: value` whose name is secret
//!   (see [`is_secret_name`]): query parameters (`?password=`,
//!   `sslpassword=`), key=value DSNs (`host=h password='a b'`), settings
//!   (`REDIS_PASSWORD=`) and headers (`Authorization: Bearer …`, to the end
//!   of the line);
//! - a `Bearer` credential standing alone.
//!
//! Redaction errs on hiding too much: a value after a secret name ends at
//! the first space, quote, `&`, `;` or `,` unless it is quoted.

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

/// Names whose whole value (to the end of the line) is a credential.
const HEADER_NAMES: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Parts of a name that make it secret wherever they appear in a part.
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "auth",
    "credential",
];

/// True for a header, query parameter, DSN keyword or variable name that
/// carries a secret: `Authorization`, `Proxy-Authorization`, `Cookie`,
/// `Set-Cookie`, and any name with `password`, `passwd`, `pwd`, `secret`,
/// `token`, `auth` or `credential` in it, or with a `key` beside another
/// word (`X-Api-Key`, `apikey`, `access_key`). `key` alone is not secret
/// (an event's partition key is logged as `key`). Case does not matter.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if HEADER_NAMES.contains(&lower.as_str()) {
        return true;
    }
    let parts: Vec<&str> = lower
        .split(['-', '_', '.'])
        .filter(|p| !p.is_empty())
        .collect();
    parts.iter().any(|p| {
        *p == "pass"
            || SECRET_WORDS.iter().any(|w| p.contains(w))
            || (p.ends_with("key") && *p != "key")
    }) || (parts.len() > 1 && parts.contains(&"key"))
}

/// `text` with every secret it holds replaced by `***` (see the module
/// docs): a URL, a DSN, a header line or a whole message.
pub fn redact(text: &str) -> String {
    let text = redact_userinfo(text);
    let text = redact_assignments(&text);
    redact_bearer(&text)
}

/// The same as [`redact`], under the name older callers use for URLs.
pub fn redact_url(url: &str) -> String {
    redact(url)
}

/// Characters that end a URL in running text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

/// Hides the password of every `scheme://user:password@host` in `text`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_len = scheme_chars_before(&rest[..at]);
        let body_start = at + 3;
        let body = &rest[body_start..];
        // A URL ends at a space or quote, or where the next one begins
        // (`cluster[redis://a,redis://b]`).
        let next_url = body
            .find("://")
            .map_or(body.len(), |n| n - scheme_chars_before(&body[..n]));
        let span_len = body[..next_url].find(ends_url).unwrap_or(next_url);
        let span = &rest[body_start..body_start + span_len];
        out.push_str(&rest[..body_start]);
        match (scheme_len > 0).then(|| userinfo_secret(&rest[at - scheme_len..at], span)) {
            Some(Some((from, to))) => {
                out.push_str(&span[..from]);
                out.push_str(MASK);
                out.push_str(&span[to..]);
            }
            _ => out.push_str(span),
        }
        rest = &rest[body_start + span_len..];
    }
    out.push_str(rest);
    out
}

/// The length of the URL scheme that `text` ends with (0 if none).
fn scheme_chars_before(text: &str) -> usize {
    text.chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .count()
}

/// The byte range of the secret in a URL's text after `://`, if any.
fn userinfo_secret(scheme: &str, span: &str) -> Option<(usize, usize)> {
    let authority_end = span.find(['/', '?', '#']).unwrap_or(span.len());
    if let Some(at) = span[..authority_end].rfind('@') {
        // user:password@host: the password only; a lone user is a name.
        return span[..at].find(':').map(|colon| (colon + 1, at));
    }
    // An '@' after a '/', '?' or '#': fine in a valid URL (an address in
    // the path or query); in one that does not parse, most likely a
    // password holding an unescaped '/': hide all of the user info.
    let at = span.rfind('@')?;
    let parses = url::Url::parse(&format!("{scheme}://{span}")).is_ok();
    (!parses && at > 0).then_some((0, at))
}

/// Characters of a name (`password`, `X-Api-Key`, `REDIS_PASSWORD`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Hides the value of every `secret=value` / `secret: value` in `text`.
fn redact_assignments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < text.len() {
        let c = text[i..].chars().next().expect("in bounds");
        let at_boundary = i == 0 || !is_name_char(text[..i].chars().next_back().expect("i > 0"));
        if !(is_name_char(c) && at_boundary) {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let name_end = text[i..]
            .find(|c: char| !is_name_char(c))
            .map_or(text.len(), |n| i + n);
        let name = &text[i..name_end];
        out.push_str(name);
        i = name_end;
        // The separator: an optional closing quote (a JSON key), spaces,
        // then `=` or `:` (not `://`), then spaces. Checked before the name,
        // which is the dearer test (this runs on every log line).
        let mut j = i;
        let json_key =
            bytes.get(j) == Some(&b'"') && name_start_quoted(text, name_end - name.len());
        if json_key {
            j += 1;
        }
        while matches!(bytes.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if !matches!(bytes.get(j), Some(b'=' | b':'))
            || text[j..].starts_with("://")
            || !is_secret_name(name)
        {
            continue;
        }
        j += 1;
        while matches!(bytes.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        let header = HEADER_NAMES.contains(&name.to_ascii_lowercase().as_str());
        let (value_start, value_end) = value_span(text, j, header);
        if value_end == value_start || &text[value_start..value_end] == MASK {
            continue;
        }
        // A JSON field whose value is not a string (`"auth":true`, a
        // number, null, an object or array, whose strings are looked at on
        // their own) holds no secret itself, and a bare `***` for it would
        // make the line invalid JSON.
        if json_key && !matches!(bytes.get(j), Some(b'"')) {
            continue;
        }
        out.push_str(&text[i..value_start]);
        out.push_str(MASK);
        i = value_end;
    }
    out
}

fn name_start_quoted(text: &str, name_start: usize) -> bool {
    text[..name_start].ends_with('"')
}

/// Where the value starting at `from` lies (quotes excluded).
fn value_span(text: &str, from: usize, header: bool) -> (usize, usize) {
    let rest = &text[from..];
    if header {
        // A header value runs to the end of the line (or of the quoted
        // text it sits in).
        let end = rest
            .find(['\n', '\r', '"', '\'', '\\'])
            .unwrap_or(rest.len());
        return (from, from + rest[..end].trim_end().len());
    }
    if let Some(quote) = rest.chars().next().filter(|c| matches!(c, '\'' | '"')) {
        let mut escaped = false;
        for (n, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == quote => return (from + 1, from + n),
                _ => {}
            }
        }
        return (from + 1, text.len());
    }
    let end = rest
        .find(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '&' | ';' | ',' | '"' | '\'' | ')' | ']' | '}' | '>' | '\\' | '`'
                )
        })
        .unwrap_or(rest.len());
    (from, from + end)
}

/// Hides the credential after every `Bearer ` in `text`.
fn redact_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_ignore_case(rest, "bearer ") {
        let after = at + "bearer ".len();
        let token_len = rest[after..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .unwrap_or(rest.len() - after);
        out.push_str(&rest[..after]);
        let token = &rest[after..after + token_len];
        out.push_str(if token.is_empty() { "" } else { MASK });
        rest = &rest[after + token_len..];
    }
    out.push_str(rest);
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "SENTINEL";

    #[track_caller]
    fn hidden(text: &str) -> String {
        let out = redact(text);
        assert!(!out.contains(S), "{text:?} -> {out:?}");
        assert_eq!(redact(&out), out, "redaction is idempotent");
        out
    }

    #[test]
    fn json_log_lines_stay_json() {
        let line = r#"{"fields":{"relay":false,"auth":true,"token_set":null,"token_ttl":30,"auth_info":{"password":"SENTINEL"},"password":"SENTINEL"}}"#;
        let out = hidden(line);
        assert_eq!(
            out,
            r#"{"fields":{"relay":false,"auth":true,"token_set":null,"token_ttl":30,"auth_info":{"password":"***"},"password":"***"}}"#
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        assert_eq!(redact("password=true"), "password=***");
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            hidden("redis://:SENTINEL@localhost:6379/0"),
            "redis://:***@localhost:6379/0"
        );
        assert_eq!(
            hidden("redis://user:SENTINEL@host/"),
            "redis://user:***@host/"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert!(!redact_url("redis://u:p@[bad").contains('p'));
        // unescaped '@' and '/' in the password
        assert_eq!(hidden("redis://:SENT@INEL@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(hidden("redis://:SENT/INEL@h:1"), "redis://***@h:1");
        // an address in the query of a valid URL is left alone
        assert_eq!(
            redact("https://h:8080/x?mail=a@b.c"),
            "https://h:8080/x?mail=a@b.c"
        );
        assert_eq!(
            hidden("cannot reach Redis at rediss://app:SENTINEL@10.0.0.1:6380 (refused)"),
            "cannot reach Redis at rediss://app:***@10.0.0.1:6380 (refused)"
        );
        assert_eq!(
            hidden("cluster[redis://:SENTINEL@a:1,redis://:SENTINEL@b:2]"),
            "cluster[redis://:***@a:1,redis://:***@b:2]"
        );
    }

    #[test]
    fn query_parameters_and_dsns() {
        assert_eq!(
            hidden("postgres://u@127.0.0.1:1/x?password=SENTINEL"),
            "postgres://u@127.0.0.1:1/x?password=***"
        );
        assert_eq!(
            hidden("postgres://u@h/x?sslmode=require&sslpassword=SENTINEL&application_name=a"),
            "postgres://u@h/x?sslmode=require&sslpassword=***&application_name=a"
        );
        assert_eq!(
            hidden("host=127.0.0.1 port=1 user=u password=SENTINEL dbname=x"),
            "host=127.0.0.1 port=1 user=u password=*** dbname=x"
        );
        assert_eq!(
            hidden("host=h password = 'SENT \\' INEL' dbname=x"),
            "host=h password = '***' dbname=x"
        );
        assert_eq!(hidden("REDIS_PASSWORD=SENTINEL"), "REDIS_PASSWORD=***");
        assert_eq!(hidden(r#"{"token":"SENTINEL"}"#), r#"{"token":"***"}"#);
    }

    #[test]
    fn headers() {
        assert_eq!(
            hidden("Authorization: Bearer SENTINEL\nnext"),
            "Authorization: ***\nnext"
        );
        assert_eq!(
            hidden("--http-header Authorization=Basic SENTINEL"),
            "--http-header Authorization=***"
        );
        assert_eq!(hidden("X-Api-Key: SENTINEL"), "X-Api-Key: ***");
        assert_eq!(hidden("cookie: a=SENTINEL; b=2"), "cookie: ***");
        assert_eq!(
            hidden("got \"Bearer SENTINEL\" instead"),
            "got \"Bearer ***\" instead"
        );
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "key=wi-1 group=g error: cannot reach Redis",
            "line 3: invalid event: key of work_item.created event is empty",
            "eventbus: error: --http-header: Authorization is a secret",
            "password",
            "",
            "ünïcödé: ✓ token",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn secret_names() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Api-Key",
            "apikey",
            "X-Auth-Token",
            "sslpassword",
            "PGPASSWORD",
            "client_secret",
            "access_key",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "key",
            "Content-Type",
            "X-Request-Id",
            "host",
            "user",
            "dbname",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
