//! What each scenario measures besides its rate: CPU time (this process,
//! its waited-for children, Redis, PostgreSQL), peak RSS, and latency
//! percentiles.
//!
//! - **This process**: user + system time from `/proc/self/stat`
//!   (`utime`, `stime`, in clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
//!   It counts every thread of the bench process: publishers, consumers,
//!   the relay, the Tokio runtime, and the bench's own bookkeeping (latency
//!   stamps), but not the building of events, which happens before the clock starts.
//! - **Children**: `cutime` + `cstime`, the CPU of children already waited
//!   for: `redis-benchmark`, `pgbench`, and the peer processes.
//! - **Redis**: `used_cpu_user` + `used_cpu_sys` from `INFO cpu`, before and after,
//!   of every node in the context's [`CpuNode`] list: the one server of a
//!   normal run; each master and replica of the single-vs-cluster comparison
//!   (the Redis figure is then the masters' sum, each node also listed).
//! - **PostgreSQL**: the sum over every `postgres` process in `/proc` of its
//!   CPU plus that of its reaped children (backends that exited are
//!   accounted to the postmaster).
//! - **Peak RSS**: `VmHWM` from `/proc/self/status`, reset before each
//!   scenario by writing `5` to `/proc/self/clear_refs`.

use eventbus::RedisConn;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Linux reports process CPU times in ticks of `USER_HZ`, which is 100 on
/// every architecture the kernel exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds of this process and of its waited-for children.
fn own_cpu() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    stat_cpu(&stat)
}

/// `(self, children)` CPU seconds from the text of a `/proc/<pid>/stat` file.
fn stat_cpu(stat: &str) -> (f64, f64) {
    // The command name is in parentheses and may contain spaces: fields
    // are counted after the last ')'. Field 3 (state) is index 0 there.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let get = |field: usize| f.get(field - 3).copied().unwrap_or(0.0) / TICKS_PER_SECOND;
    (get(14) + get(15), get(16) + get(17))
}

/// Total CPU seconds of every `postgres` process (with reaped children).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(postgres)"))
        .map(|s| {
            let (own, children) = stat_cpu(&s);
            own + children
        })
        .sum()
}

/// Redis's own CPU seconds (`INFO cpu`), or `None` if it cannot be read.
async fn redis_cpu(conn: &mut RedisConn) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// A `Name:   123 kB` field of a `/proc` text file (`status`, `meminfo`), in KiB.
pub(crate) fn kib_field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Peak resident set size of this process in MiB (`VmHWM`).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(kib_field(&status, "VmHWM")? / 1024.0)
}

/// Resets the peak RSS to the current RSS, so the next reading is the peak
/// of what follows. Returns false where the kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Busy CPU seconds of the whole machine, every core (`user`, `nice`,
/// `system`, `irq`, `softirq` of the `cpu` line of `/proc/stat`).
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    Some((at(0) + at(1) + at(2) + at(5) + at(6)) / TICKS_PER_SECOND)
}

/// What every other process on the machine used while a scenario ran:
/// the machine's busy time less this process's and one Redis's, as cores
/// (1.0 = one core busy all along). Tells a run slowed by a neighbour (a
/// build) from one slowed by what it measures.
pub(crate) struct OthersMeter {
    started: Instant,
    busy: Option<f64>,
    own: f64,
    redis: Option<f64>,
    conn: RedisConn,
}

impl OthersMeter {
    /// Starts measuring; `conn` is the Redis whose CPU is not "others".
    pub(crate) async fn start(conn: &RedisConn) -> Self {
        let mut conn = conn.clone();
        OthersMeter {
            redis: redis_cpu(&mut conn).await,
            busy: machine_busy(),
            own: own_cpu().0,
            started: Instant::now(),
            conn,
        }
    }

    /// The others' cores, `None` where a counter could not be read.
    pub(crate) async fn stop(mut self) -> Option<f64> {
        let seconds = self.started.elapsed().as_secs_f64();
        let own = own_cpu().0 - self.own;
        let busy = machine_busy()? - self.busy?;
        let redis = redis_cpu(&mut self.conn).await? - self.redis?;
        Some(((busy - own - redis) / seconds.max(1e-9)).max(0.0))
    }
}

/// A Redis node whose `INFO cpu` a [`Meter`] reads.
#[derive(Clone)]
pub(crate) struct CpuNode {
    /// `master 127.0.0.1:7000`, `replica …`, or `redis` for a normal run's server.
    pub(crate) name: String,
    /// Masters count in a row's Redis CPU; replicas are only listed.
    pub(crate) master: bool,
    /// A connection to this node alone (not a cluster connection).
    pub(crate) conn: RedisConn,
}

/// One Redis node's CPU during a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCpu {
    /// As [`CpuNode`]'s name.
    pub name: String,
    /// A master (else a replica).
    pub master: bool,
    /// CPU seconds (user + system) over the timed part.
    pub cpu_seconds: f64,
    /// The same as a share of one core over the wall-clock time (100 = one core busy).
    pub core_percent: f64,
}

/// CPU seconds per million events, by whom.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerMillion {
    /// The process doing the work: this bench process for our scenarios,
    /// the child process for baselines and peers.
    pub client: f64,
    /// The Redis server.
    pub redis: Option<f64>,
    /// The PostgreSQL server (all its processes).
    pub postgres: Option<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub(crate) fn from_micros(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Latency {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        })
    }
}

/// A histogram of microseconds, 1 µs to 10 min, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A clock started before a scenario; [`Meter::stop`] reads what it used.
pub(crate) struct Meter {
    started: Instant,
    own: (f64, f64),
    /// Each node's CPU counter at the start (`None` where it could not be read).
    redis: Vec<Option<f64>>,
    postgres: f64,
    nodes: Vec<CpuNode>,
    rss_reset: bool,
}

/// What a scenario used, from [`Meter::stop`].
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub(crate) seconds: f64,
    /// CPU seconds of this process.
    pub(crate) own_cpu: f64,
    /// CPU seconds of children waited for during the scenario.
    pub(crate) children_cpu: f64,
    /// The masters' CPU seconds (the one server's in a normal run).
    pub(crate) redis_cpu: Option<f64>,
    /// Every metered node, when there is more than one.
    pub(crate) redis_nodes: Vec<NodeCpu>,
    pub(crate) postgres_cpu: f64,
    /// Peak RSS of this process during the scenario (MiB), if it could be reset first.
    pub(crate) peak_rss_mib: Option<f64>,
}

impl Usage {
    /// CPU per million events, with `client` the CPU of this process or of
    /// the children.
    pub(crate) fn per_million(&self, events: u64, client_is_child: bool) -> CpuPerMillion {
        let scale = 1_000_000.0 / events.max(1) as f64;
        CpuPerMillion {
            client: scale
                * if client_is_child {
                    self.children_cpu
                } else {
                    self.own_cpu
                },
            redis: self.redis_cpu.map(|c| c * scale),
            postgres: (self.postgres_cpu > 0.0).then_some(self.postgres_cpu * scale),
        }
    }
}

impl Meter {
    /// Starts measuring. `nodes` are the Redis servers whose CPU counters
    /// are read (see [`CpuNode`]).
    pub(crate) async fn start(nodes: &[CpuNode]) -> Self {
        let rss_reset = reset_peak_rss();
        let mut redis = Vec::with_capacity(nodes.len());
        for node in nodes {
            redis.push(redis_cpu(&mut node.conn.clone()).await);
        }
        Meter {
            postgres: postgres_cpu(),
            own: own_cpu(),
            redis,
            nodes: nodes.to_vec(),
            rss_reset,
            started: Instant::now(),
        }
    }

    /// Stops measuring.
    pub(crate) async fn stop(self) -> Usage {
        let seconds = self.started.elapsed().as_secs_f64();
        let own = own_cpu();
        let postgres = postgres_cpu();
        let mut masters: Option<f64> = None;
        let mut all = true;
        let mut redis_nodes = Vec::with_capacity(self.nodes.len());
        for (node, before) in self.nodes.iter().zip(&self.redis) {
            let used = match (before, redis_cpu(&mut node.conn.clone()).await) {
                (Some(a), Some(b)) => b - a,
                _ => {
                    all = false;
                    continue;
                }
            };
            if node.master {
                *masters.get_or_insert(0.0) += used;
            }
            redis_nodes.push(NodeCpu {
                name: node.name.clone(),
                master: node.master,
                cpu_seconds: used,
                core_percent: 100.0 * used / seconds.max(1e-9),
            });
        }
        if self.nodes.len() < 2 {
            redis_nodes.clear();
        }
        Usage {
            seconds,
            own_cpu: own.0 - self.own.0,
            children_cpu: own.1 - self.own.1,
            // A sum with a node missing would understate it: none then.
            redis_cpu: masters.filter(|_| all),
            redis_nodes,
            postgres_cpu: postgres - self.postgres,
            peak_rss_mib: if self.rss_reset { peak_rss_mib() } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0 1 0";
        let (own, children) = stat_cpu(stat);
        assert!((own - 3.0).abs() < 1e-9, "{own}");
        assert!((children - 0.1).abs() < 1e-9, "{children}");
    }

    #[test]
    fn reads_this_process() {
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
        let (own, _) = own_cpu();
        assert!(own >= 0.0);
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let l = Latency::from_micros(&h).unwrap();
        assert!((l.p50_ms - 5.0).abs() < 0.05, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.05, "{l:?}");
        assert!(Latency::from_micros(&histogram()).is_none());
    }
}
