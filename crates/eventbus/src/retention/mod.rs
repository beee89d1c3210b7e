//! Ack-aware stream retention: trim what every group has acknowledged,
//! never an entry some group still needs.
//!
//! A stream's **safe point** is the oldest entry some group still needs:
//! for each group on the stream (`XINFO GROUPS`), the smaller of its oldest
//! pending entry (`XPENDING`) and the entry after its last-delivered id.
//! Entries below the safe point were delivered to every group and
//! acknowledged by it; `XTRIM <stream> MINID <safe point>` removes exactly
//! those. The ordered runtime holds nothing else: a partition's entries are
//! either pending to an owner (a new owner claims them from the pending
//! list) or not yet delivered; park state and replays refer to dead letters
//! and replay streams, not to partition entries.
//!
//! Reading the groups and trimming happen in one Lua script, so no group can
//! acknowledge, read or be created between the two (one key: on Redis
//! Cluster the script runs in the stream's slot). Redis 8.2's
//! `XTRIM … ACKED` is not used: 7.0 and 7.2 must work, and the script does
//! the same there.
//!
//! A stream with no group keeps its entries for [`RetentionPolicy::unread_keep`]
//! (nobody reads it; the entries may be meant for a group not created yet),
//! then they are trimmed with a warning.

mod trim;
mod trimmer;

use std::time::Duration;

use crate::{Error, Result};

pub use trim::{lease_key, trim_all, trim_stream, TrimReport};
pub use trimmer::{redis_memory, NodeMemory, Trimmer, TrimmerConfig};

/// How long entries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `None`: retention off (nothing is trimmed). `Some(age)`: trim what
    /// every group acknowledged and is older than `age` (zero: as soon as
    /// acknowledged).
    pub acked_after: Option<Duration>,
    /// Entries of a stream without any group are kept this long. Default 7 days.
    pub unread_keep: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            acked_after: Some(Duration::ZERO),
            unread_keep: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl RetentionPolicy {
    /// Parses `acked`, `acked:<duration>` (`30m`, `2h`, `7d`, `45s`) or `off`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "stream retention {s:?}: expected `acked`, `acked:<duration>` (e.g. acked:1h) or `off`"
            ))
        };
        let acked_after = match s.trim() {
            "off" => None,
            "acked" => Some(Duration::ZERO),
            other => {
                let d = other.strip_prefix("acked:").ok_or_else(bad)?;
                Some(parse_duration(d).ok_or_else(bad)?)
            }
        };
        Ok(RetentionPolicy {
            acked_after,
            ..Default::default()
        })
    }
}

/// `45s`, `30m`, `2h`, `7d` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_refuse_in_words() {
        assert_eq!(
            RetentionPolicy::parse("acked").unwrap().acked_after,
            Some(Duration::ZERO)
        );
        assert_eq!(
            RetentionPolicy::parse("acked:2h").unwrap().acked_after,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(RetentionPolicy::parse("off").unwrap().acked_after, None);
        for bad in ["", "ack", "acked:", "acked:5x", "acked:-1h", "maxlen:10"] {
            let e = RetentionPolicy::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected `acked`"), "{bad}: {e}");
        }
    }
}
