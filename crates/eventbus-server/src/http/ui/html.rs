//! Building the console's HTML: escaping (every value shown goes through
//! [`esc`] or [`esc_bytes`]), numbers with their units, links, and the
//! page frame.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::session::Viewer;

/// `text` escaped for HTML text and double- or single-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Shown, not hidden: control characters as `\u{..}`.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes that may not be text: valid UTF-8 is shown (escaped), every
/// other byte as `\xNN`.
pub(crate) fn esc_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&esc(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `text` cut to `max` characters, with an ellipsis when cut (not escaped).
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// A query-string or path-segment component, percent-encoded (then safe in
/// an attribute too).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `n` with thousands separators.
pub(crate) fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and its unit, singular or plural: `1 entry`, `12 entries`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", num(n), if n == 1 { one } else { many })
}

/// Entries, the unit of most figures.
pub(crate) fn entries(n: u64) -> String {
    count(n, "entry", "entries")
}

/// A duration in milliseconds, in the largest fitting unit: `840 ms`,
/// `4.2 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub(crate) fn ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A duration in seconds (as PostgreSQL reports ages).
pub(crate) fn secs(s: f64) -> String {
    ms((s.max(0.0) * 1000.0) as u64)
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A time, UTC, to the second.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A number cell kept in place by live refresh: `data-k` names it.
pub(crate) fn cell(key: &str, text: &str) -> String {
    format!(r#"<td class="n" data-k="{}">{}</td>"#, esc(key), esc(text))
}

/// The sections of the console, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Groups,
    DeadLetters,
    Events,
    Schemas,
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Groups, "/ui/groups", "Groups"),
    (Nav::DeadLetters, "/ui/dlq", "Dead letters"),
    (Nav::Events, "/ui/events", "Events"),
    (Nav::Schemas, "/ui/schemas", "Schemas"),
];

/// A whole page: head, navigation (with a session), `body`. The title and
/// namespace are escaped here; `body` is HTML built with the helpers above.
pub(crate) fn render(title: &str, viewer: Option<&Viewer>, nav: Nav, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · eventbus console</title>
<link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/assets/console.css?v={}">
<script src="/ui/assets/console.js?v={}" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/ui">eventbus console</a>
"##,
        esc(title),
        super::ASSET_VERSION,
        super::ASSET_VERSION,
    );
    if let Some(v) = viewer {
        out.push_str(r#"<nav aria-label="Sections"><ul>"#);
        for (item, href, label) in NAV {
            let current = if item == nav {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(out, r#"<li><a href="{href}"{current}>{label}</a></li>"#);
        }
        out.push_str("</ul></nav>");
        let _ = write!(
            out,
            r#"<div class="who"><span class="badge {}">{}</span>
<span id="live-status" class="live-status" aria-live="polite"></span>
<form method="post" action="/ui/logout" class="inline">{}<button type="submit">Log out</button></form></div>"#,
            if v.is_admin() { "admin" } else { "read" },
            if v.is_admin() {
                "admin session"
            } else {
                "read-only session"
            },
            v.csrf_field(),
        );
    }
    let _ = write!(
        out,
        "</header>\n<main id=\"main\" tabindex=\"-1\">\n<h1>{}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        esc(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\0b\u{1b}c"), "a\\u{0}b\\u{1b}c");
        assert_eq!(esc_bytes(b"ok\xff<\x00"), "ok\\xff&lt;\\u{0}");
        assert_eq!(enc("a b/c?&\"<"), "a%20b%2Fc%3F%26%22%3C");
    }

    #[test]
    fn numbers_carry_units() {
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(num(999), "999");
        assert_eq!(entries(1), "1 entry");
        assert_eq!(entries(1200), "1,200 entries");
        assert_eq!(ms(840), "840 ms");
        assert_eq!(ms(4_200), "4.2 s");
        assert_eq!(ms(185_000), "3 min 5 s");
        assert_eq!(ms(7_800_000), "2 h 10 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
