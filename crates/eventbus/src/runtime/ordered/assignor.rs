//! The sticky, balanced partition assignment every member computes.
//!
//! There is no leader: each member runs [`assign`] on the same inputs (the
//! live members with their topics, read from Redis, and the current lease
//! owners) and acts only on its own row of the result: it releases what it
//! holds beyond its target and acquires free partitions in its target.
//! Leases are taken with a compare-and-set script, so two members whose
//! views briefly differ can never both own a partition; once the views agree
//! (one heartbeat later) everyone converges on the same assignment.
//!
//! The rule (per topic, topics in name order, members in id order):
//!
//! 1. The topic's `N` partitions are shared by the `n` members subscribed to
//!    it: every member gets `N / n`, and `N % n` of them one more. The extra
//!    ones go to the members with the fewest partitions of earlier topics (so
//!    the total stays within ±1), then to those owning the most of this topic
//!    now (so nothing moves for the sake of it), then by id.
//! 2. Each member keeps what it owns now, up to its quota (lowest partition
//!    numbers first).
//! 3. What is left (free, owned by a member that is gone, or over a quota)
//!    fills the members below their quota, in id order.
//!
//! So a join moves only what the newcomer needs (at most `ceil(N / n)` per
//! topic) and a leave moves only the leaver's partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A partition of a topic.
pub(crate) type PartitionId = (String, u32);

/// A live member and the topics it consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberTopics {
    pub(crate) id: String,
    pub(crate) topics: BTreeSet<String>,
}

/// The target partitions of every member (members with none are present
/// with an empty set).
pub(crate) fn assign(
    members: &[MemberTopics],
    partitions: &BTreeSet<PartitionId>,
    owners: &HashMap<PartitionId, String>,
) -> BTreeMap<String, BTreeSet<PartitionId>> {
    let mut members: Vec<&MemberTopics> = members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members.dedup_by(|a, b| a.id == b.id);
    let mut result: BTreeMap<String, BTreeSet<PartitionId>> = members
        .iter()
        .map(|m| (m.id.clone(), BTreeSet::new()))
        .collect();
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, p) in partitions {
        by_topic.entry(topic.as_str()).or_default().push(*p);
    }
    for (topic, parts) in by_topic {
        let eligible: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.id.as_str())
            .collect();
        if eligible.is_empty() {
            continue;
        }
        let current = |m: &str| -> Vec<u32> {
            parts
                .iter()
                .copied()
                .filter(|p| owners.get(&(topic.to_owned(), *p)).map(String::as_str) == Some(m))
                .collect()
        };
        let n = eligible.len();
        let base = parts.len() / n;
        let extra = parts.len() % n;
        let mut order: Vec<(usize, usize, &str)> = eligible
            .iter()
            .map(|m| (result[*m].len(), current(m).len(), *m))
            .collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
        let quota: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, (_, _, m))| (*m, base + usize::from(i < extra)))
            .collect();

        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut room: Vec<(&str, usize)> = Vec::new();
        for m in &eligible {
            let keep: Vec<u32> = current(m).into_iter().take(quota[m]).collect();
            room.push((m, quota[m] - keep.len()));
            let set = result.get_mut(*m).expect("member present");
            for p in keep {
                taken.insert(p);
                set.insert((topic.to_owned(), p));
            }
        }
        let mut free = parts.iter().copied().filter(|p| !taken.contains(p));
        for (m, slots) in room {
            let set = result.get_mut(m).expect("member present");
            for p in free.by_ref().take(slots) {
                set.insert((topic.to_owned(), p));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<MemberTopics> {
        ids.iter()
            .map(|id| MemberTopics {
                id: (*id).to_owned(),
                topics: ["t".to_owned()].into(),
            })
            .collect()
    }

    fn parts(topic: &str, n: u32) -> BTreeSet<PartitionId> {
        (0..n).map(|p| (topic.to_owned(), p)).collect()
    }

    fn owners_of(a: &BTreeMap<String, BTreeSet<PartitionId>>) -> HashMap<PartitionId, String> {
        a.iter()
            .flat_map(|(m, ps)| ps.iter().map(move |p| (p.clone(), m.clone())))
            .collect()
    }

    fn check_exact_and_balanced(
        a: &BTreeMap<String, BTreeSet<PartitionId>>,
        all: &BTreeSet<PartitionId>,
    ) {
        let mut seen = BTreeSet::new();
        for ps in a.values() {
            for p in ps {
                assert!(seen.insert(p.clone()), "{p:?} assigned twice");
            }
        }
        assert_eq!(&seen, all, "every partition assigned");
        let sizes: Vec<usize> = a.values().map(BTreeSet::len).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "unbalanced: {sizes:?}");
    }

    fn moves(
        before: &HashMap<PartitionId, String>,
        after: &BTreeMap<String, BTreeSet<PartitionId>>,
    ) -> usize {
        let after = owners_of(after);
        before
            .iter()
            .filter(|(p, m)| after.get(*p) != Some(*m))
            .count()
    }

    #[test]
    fn three_members_sixteen_partitions() {
        let all = parts("t", 16);
        let a = assign(&members(&["a", "b", "c"]), &all, &HashMap::new());
        check_exact_and_balanced(&a, &all);
    }

    #[test]
    fn join_moves_only_what_the_newcomer_needs() {
        let all = parts("t", 16);
        let three = assign(&members(&["a", "b", "c"]), &all, &HashMap::new());
        let before = owners_of(&three);
        let four = assign(&members(&["a", "b", "c", "d"]), &all, &before);
        check_exact_and_balanced(&four, &all);
        assert_eq!(moves(&before, &four), 4);
        assert_eq!(four["d"].len(), 4);
    }

    #[test]
    fn leave_moves_only_the_leavers_partitions() {
        let all = parts("t", 16);
        let four = assign(&members(&["a", "b", "c", "d"]), &all, &HashMap::new());
        let mut before = owners_of(&four);
        let three = assign(&members(&["a", "b", "d"]), &all, &before);
        check_exact_and_balanced(&three, &all);
        before.retain(|_, m| m != "c");
        assert_eq!(moves(&before, &three), 0, "survivors keep theirs");
    }

    #[test]
    fn stable_when_nothing_changes() {
        let all = parts("t", 16);
        let m = members(&["a", "b", "c"]);
        let first = assign(&m, &all, &HashMap::new());
        let again = assign(&m, &all, &owners_of(&first));
        assert_eq!(first, again);
    }

    #[test]
    fn several_topics_stay_balanced_in_total() {
        let mut all = parts("a", 16);
        all.extend(parts("b", 16));
        all.extend(parts("c", 5));
        let mut m = members(&["x", "y", "z"]);
        for member in &mut m {
            member.topics = ["a", "b", "c"].iter().map(|t| (*t).to_owned()).collect();
        }
        let a = assign(&m, &all, &HashMap::new());
        check_exact_and_balanced(&a, &all);
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let mut all = parts("a", 4);
        all.extend(parts("b", 4));
        let m = vec![
            MemberTopics {
                id: "x".into(),
                topics: ["a".to_owned()].into(),
            },
            MemberTopics {
                id: "y".into(),
                topics: ["a".to_owned(), "b".to_owned()].into(),
            },
        ];
        let a = assign(&m, &all, &HashMap::new());
        assert!(a["x"].iter().all(|(t, _)| t == "a"));
        assert_eq!(a["y"].iter().filter(|(t, _)| t == "b").count(), 4);
    }

    /// Members acting one at a time on views that lag (each sees the owners
    /// as they were a step ago) still converge to one balanced assignment.
    #[test]
    fn converges_from_any_start() {
        let all = parts("t", 16);
        for seed in 0..50u32 {
            let ids: Vec<String> = (0..(2 + seed % 5)).map(|i| format!("m{i}")).collect();
            let m: Vec<MemberTopics> = ids
                .iter()
                .map(|id| MemberTopics {
                    id: id.clone(),
                    topics: ["t".to_owned()].into(),
                })
                .collect();
            // A messy start: owners spread unevenly, some by departed members.
            let mut owners: HashMap<PartitionId, String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| (i + seed as usize) % 3 != 0)
                .map(|(i, p)| (p.clone(), format!("m{}", (i * 7 + seed as usize) % 9)))
                .collect();
            let mut stale = owners.clone();
            for round in 0..40 {
                let id = &ids[(round + seed as usize) % ids.len()];
                let target = &assign(&m, &all, &stale)[id];
                stale = owners.clone();
                // release what is over target, acquire what is free (fresh CAS)
                owners.retain(|p, o| o != id || target.contains(p));
                let live: BTreeSet<&String> = ids.iter().collect();
                for p in target {
                    let free = owners.get(p).is_none_or(|o| !live.contains(o));
                    if free {
                        owners.insert(p.clone(), id.clone());
                    }
                }
            }
            let fin = assign(&m, &all, &owners);
            assert_eq!(owners_of(&fin), owners, "seed {seed}: not converged");
            check_exact_and_balanced(&fin, &all);
        }
    }
}
