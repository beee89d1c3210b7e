//! Deployment files: the compose files parse and every variable they use is
//! documented in `.env.example`; `deploy/users.acl` on a private Redis lets
//! each user do its job and refuses everything else.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventbus::RedisConn;
use eventbus::{
    ConsumerConfig, ConsumerMode, Envelope, Publisher, PublisherConfig, RedisConnector,
    RedisOptions, Topology,
};
use eventbus_testkit::{Collector, RedisServer};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `${NAME}`, `${NAME:-x}`, `${NAME:?x}` in a text (`$$` escapes skipped).
fn interpolated(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let text = text.replace("$$", "");
    for part in text.split("${").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn compose_files_parse_and_every_variable_is_documented() {
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let documented: BTreeSet<String> = example
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    for file in [
        "deploy/docker-compose.yml",
        "deploy/docker-compose.prod.yml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let services = doc["services"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{file}: no services"));
        assert!(!services.is_empty());
        let mut used = interpolated(&text);
        // The variables handed to the eventbus containers are eventbus's own.
        for name in ["migrate", "eventbus"] {
            if let Some(env) = doc["services"][name]["environment"].as_mapping() {
                for k in env.keys() {
                    used.insert(k.as_str().unwrap().to_owned());
                }
            }
        }
        let missing: Vec<&String> = used.iter().filter(|v| !documented.contains(*v)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses variables not in .env.example: {missing:?}"
        );
    }
    let base = std::fs::read_to_string(root().join("deploy/docker-compose.yml")).unwrap();
    assert!(base.contains("redis:7.2") && base.contains("postgres:15.5"));
    let conf = std::fs::read_to_string(root().join("deploy/redis.conf")).unwrap();
    assert!(conf.contains("maxmemory-policy noeviction"));
    assert!(conf.contains("appendonly yes"));
}

#[test]
fn interpolation_finds_names() {
    let found = interpolated("a ${A} b ${B:-x} $${NOT} ${C:?err}");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["A", "B", "C"]);
}

async fn connect(server: &RedisServer, user: &str) -> (RedisConnector, RedisConn) {
    let url = format!(
        "redis://{user}:CHANGE-ME-{}@127.0.0.1:{}",
        user.trim_start_matches("eventbus-"),
        server.port()
    );
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let conn = connector.shared().await.unwrap();
    (connector, conn)
}

/// Every command must be refused with NOPERM.
async fn refused(conn: &RedisConn, user: &str, commands: &[&[&str]]) {
    for args in commands {
        let mut c = conn.clone();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut c).await;
        let err = r.expect_err(&format!("{user} may run {args:?}"));
        assert!(
            err.to_string().contains("NOPERM") || err.code() == Some("NOPERM"),
            "{user} {args:?}: {err}"
        );
    }
}

fn event(catalog: &eventbus::Catalog, key_suffix: usize) -> Envelope {
    let t = catalog
        .get("work_item.created")
        .unwrap_or(&catalog.types()[0]);
    let data = t.latest().examples()[0].clone();
    let key = catalog
        .partition_key_of(t.name(), &data)
        .unwrap()
        .to_owned();
    let mut e = Envelope::new(t.name(), format!("{key}{key_suffix}"), data);
    e.version = t.latest().version();
    e
}

/// A consumer configuration with test timings.
fn fast_config(topic: &str, mode: ConsumerMode, group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group, [topic]);
    config.mode = mode;
    config.block = Duration::from_millis(100);
    config.claim_idle = Duration::from_millis(400);
    config.claim_interval = Duration::from_millis(100);
    config.heartbeat_interval = Duration::from_millis(100);
    config.session_timeout = Duration::from_secs(1);
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

async fn consume_one(
    connector: RedisConnector,
    topology: &Topology,
    topic: &str,
    mode: ConsumerMode,
    group: &str,
) {
    let config = fast_config(topic, mode, group);
    let collector = Collector::new();
    let consumer =
        eventbus::Consumer::new(connector, topology.clone(), config, collector.clone()).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    let got = collector
        .wait_for(Duration::from_secs(30), |d| !d.is_empty())
        .await;
    stop.cancel();
    let result = running.await.unwrap();
    assert!(
        got,
        "the consumer user could not consume in {mode:?} mode: {result:?}"
    );
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_acl_users_do_their_job_and_nothing_else() {
    let acl = root().join("deploy/users.acl");
    let server = RedisServer::start_with(&["--aclfile", acl.to_str().unwrap()]);
    let topology = Topology::new("eventbus", 2).unwrap();
    let catalog = Arc::new(eventbus::Catalog::embedded().unwrap());
    let first = event(&catalog, 0);
    let topic = eventbus::topic_of(&first.event_type).to_owned();
    let stream = topology.stream_key(&topic, 0);
    let dead = topology.dead_stream();
    let replay = topology.replay_stream("ordered-group");
    let lease = format!("{stream}:lease:ordered-group");

    // Publisher: publishes; reads nothing, deletes nothing, no server commands.
    let (connector, conn) = connect(&server, "eventbus-publisher").await;
    let publisher = Publisher::connect(&connector, topology.clone(), PublisherConfig::default())
        .await
        .unwrap();
    let events: Vec<Envelope> = (0..4).map(|i| event(&catalog, i)).collect();
    publisher.publish_batch(&events).await.unwrap();
    // ... and schedules, and a relay running as the publisher moves due
    // events (docs/scheduled.md).
    let later = event(&catalog, 9);
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(200);
    publisher.publish_at(&later, due).await.unwrap();
    let scheduler = eventbus::Scheduler::connect(&connector, topology.clone(), Default::default())
        .await
        .unwrap();
    scheduler.sweep().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while scheduler.tick().await.unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher's scheduler moved nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refused(
        &conn,
        "publisher",
        &[
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", &stream, ">"],
            &["XACK", &stream, "g", "0-1"],
            &["XRANGE", &stream, "-", "+"],
            &["DEL", &stream],
            &["XADD", "other:stream", "*", "a", "b"],
            &["GET", "other:key"],
            &["KEYS", "*"],
            &["FLUSHALL"],
            &["CONFIG", "GET", "*"],
            &["ACL", "LIST"],
            // Only partition streams: not dead letters, replays, leases.
            &["XADD", &dead, "*", "a", "b"],
            &["XADD", &replay, "*", "a", "b"],
            &["XADD", &lease, "*", "a", "b"],
            &["SADD", &stream, "x"],
            &["SELECT", "1"],
        ],
    )
    .await;
    // A relay running as the publisher may not trim (it says so and relays on).
    let trimmer =
        eventbus::retention::Trimmer::new(conn.clone(), topology.clone(), Default::default());
    let e = trimmer.pass().await.unwrap_err().to_string();
    assert!(e.to_ascii_lowercase().contains("noperm"), "{e}");

    // Consumer: consumes in both modes; cannot touch other keys or the server.
    let (connector, conn) = connect(&server, "eventbus-consumer").await;
    consume_one(
        connector.clone(),
        &topology,
        &topic,
        ConsumerMode::Ordered,
        "ordered-group",
    )
    .await;
    consume_one(
        connector,
        &topology,
        &topic,
        ConsumerMode::Unordered,
        "unordered-group",
    )
    .await;
    refused(
        &conn,
        "consumer",
        &[
            &["XADD", "other:stream", "*", "a", "b"],
            &["SET", "other:key", "1"],
            &["XTRIM", &stream, "MAXLEN", "0"],
            &["KEYS", "*"],
            &["FLUSHALL"],
            &["CONFIG", "GET", "*"],
            &["SCRIPT", "FLUSH"],
            &["ACL", "LIST"],
            // No deleting or forging stream entries, no other types where
            // a stream belongs, no group teardown, no other database.
            &["DEL", &stream],
            &["UNLINK", &stream],
            &["XADD", &stream, "*", "a", "b"],
            &["XDEL", &stream, "0-1"],
            &["XGROUP", "DESTROY", &stream, "ordered-group"],
            &["XGROUP", "SETID", &stream, "ordered-group", "$"],
            &["SET", &stream, "1"],
            &["HSET", &stream, "a", "b"],
            &["SADD", &stream, "x"],
            &["SET", "eventbus:topics", "1"],
            &["SELECT", "1"],
            &["CLIENT", "UNBLOCK", "1"],
        ],
    )
    .await;

    // Admin: reads and manages eventbus keys; no server-wide danger.
    let (_, conn) = connect(&server, "eventbus-admin").await;
    let topics = eventbus::admin::known_topics(&conn, &topology)
        .await
        .unwrap();
    let stats = eventbus::admin::partition_stats(&conn, &topology, &topics)
        .await
        .unwrap();
    // The batch of 4 and the scheduled event.
    assert_eq!(stats.iter().map(|p| p.length).sum::<u64>(), 4 + 1);
    let mut c = conn.clone();
    let _: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MAXLEN")
        .arg("~")
        .arg("1000")
        .query_async(&mut c)
        .await
        .unwrap();
    // serve's trimmer (as admin): trims, takes its leases, reads the memory.
    let trimmer =
        eventbus::retention::Trimmer::new(conn.clone(), topology.clone(), Default::default());
    let reports = trimmer.pass().await.unwrap();
    assert!(
        reports
            .iter()
            .any(|r| r.stream == stream && !r.leased_elsewhere),
        "{reports:?}"
    );
    assert!(!eventbus::retention::redis_memory(&conn)
        .await
        .unwrap()
        .is_empty());
    refused(
        &conn,
        "admin",
        &[
            &["GET", "other:key"],
            &["KEYS", "*"],
            &["FLUSHALL"],
            &["CONFIG", "SET", "appendonly", "no"],
            &["CLIENT", "KILL", "ID", "999999"],
            &["ACL", "SETUSER", "x", "on"],
            &["SHUTDOWN", "NOSAVE"],
            // No looking at other namespaces, no flushing scripts or
            // functions, no other database.
            &["SCAN", "0"],
            &["RANDOMKEY"],
            &["FUNCTION", "FLUSH"],
            &["SCRIPT", "FLUSH"],
            &["SELECT", "1"],
            &["MOVE", &stream, "1"],
            &["BGSAVE"],
        ],
    )
    .await;

    // Backup: snapshots, and nothing else.
    let (_, conn) = connect(&server, "eventbus-backup").await;
    let mut c = conn.clone();
    let _: i64 = redis::cmd("LASTSAVE").query_async(&mut c).await.unwrap();
    refused(
        &conn,
        "backup",
        &[
            &["GET", "eventbus:x"],
            &["XRANGE", &stream, "-", "+"],
            &["KEYS", "*"],
            &["CONFIG", "GET", "*"],
            &["FLUSHALL"],
            &["SELECT", "1"],
        ],
    )
    .await;

    // Without a user, nothing (the default user is off).
    let client = redis::Client::open(server.url()).unwrap();
    let mut anon = client.get_multiplexed_async_connection().await.unwrap();
    let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut anon).await;
    assert!(r.is_err(), "the default user answers");
}

/// A long retry of a consumer running as `deploy/users.acl`'s consumer
/// goes through the scheduler (its own, on the group's replay stream); a
/// user without those grants (the file's consumer before they were added)
/// is found at start and its retry waits in memory: handled either way.
#[tokio::test(flavor = "multi_thread")]
async fn redis_acl_consumer_schedules_long_retries_or_keeps_them_in_memory() {
    let acl = root().join("deploy/users.acl");
    let server = RedisServer::start_with(&["--aclfile", acl.to_str().unwrap()]);
    let topology = Topology::new("eventbus", 2).unwrap();
    let catalog = Arc::new(eventbus::Catalog::embedded().unwrap());
    // The consumer's rules without the scheduling grants.
    let file = std::fs::read_to_string(&acl).unwrap();
    let consumer = file
        .lines()
        .find(|l| l.starts_with("user eventbus-consumer "))
        .unwrap();
    let mut old: Vec<String> = vec!["SETUSER".into(), "eventbus-oldconsumer".into()];
    let rest = consumer
        .trim_start_matches("user eventbus-consumer ")
        .replace(" (~eventbus:{_replay:*} +xadd)", "")
        .replace(
            " (~eventbus:scheduled +zadd +zrem +zrange +zrangebyscore)",
            "",
        )
        .replace(">CHANGE-ME-consumer", ">CHANGE-ME-oldconsumer");
    assert_ne!(rest, consumer.trim_start_matches("user eventbus-consumer "));
    // Split into ACL rules; parenthesised selectors stay whole.
    let mut depth = 0;
    let mut cur = String::new();
    for ch in rest.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ' ' if depth == 0 => {
                if !cur.is_empty() {
                    old.push(std::mem::take(&mut cur));
                }
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    old.push(cur);
    // The admin may not SETUSER: the old user lives on a second server.
    let server_old = RedisServer::start();
    let mut root_conn = redis::Client::open(server_old.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&old)
        .query_async(&mut root_conn)
        .await
        .unwrap();

    for (server, user, scheduled) in [
        (&server, "eventbus-consumer", true),
        (&server_old, "eventbus-oldconsumer", false),
    ] {
        let (connector, conn) = connect(server, user).await;
        let first = event(&catalog, 0);
        let topic = eventbus::topic_of(&first.event_type).to_owned();
        let mut config = fast_config(&topic, ConsumerMode::Unordered, "g");
        config.retry = eventbus::RetryPolicy {
            max_attempts: 3,
            backoff: eventbus::Backoff::Schedule(vec![Duration::from_millis(300)]),
            attempt_timeout: Some(Duration::from_secs(5)),
        };
        config.scheduled_retry_after = Some(Duration::from_millis(100));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handler = {
            let calls = calls.clone();
            eventbus::handler_fn(move |_d: eventbus::Delivery| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    match n {
                        0 => Err(eventbus::HandlerError::retryable("first time")),
                        _ => Ok(()),
                    }
                }
            })
        };
        let consumer =
            eventbus::Consumer::new(connector, topology.clone(), config, handler).unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(consumer.run(stop.clone()));
        // Published by a user that may (root on the second server).
        let publisher_url = match scheduled {
            true => format!(
                "redis://eventbus-publisher:CHANGE-ME-publisher@127.0.0.1:{}",
                server.port()
            ),
            false => server.url(),
        };
        let p = Publisher::connect(
            &RedisConnector::new(&publisher_url, RedisOptions::default()).unwrap(),
            topology.clone(),
            PublisherConfig::default(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.publish(&first).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{user}: the retry never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap().unwrap();
        let replayed: u64 = redis::cmd("XLEN")
            .arg(topology.replay_stream("g"))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        assert_eq!(
            replayed > 0,
            scheduled,
            "{user}: the retry went through the scheduler: {}",
            replayed > 0
        );
    }
}

/// Without PostgreSQL the dead-letter records live in Redis: the consumer
/// user writes them (the stream entry and the record, in one script) when
/// its handler fails, and the admin user (`eventbus dlq`, `serve`) lists,
/// replays, discards and purges them; every key is under `eventbus:*`.
#[tokio::test(flavor = "multi_thread")]
async fn redis_acl_users_keep_dead_letters_without_postgres() {
    use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore, ReplayOptions};
    let acl = root().join("deploy/users.acl");
    let server = RedisServer::start_with(&["--aclfile", acl.to_str().unwrap()]);
    let topology = Topology::new("eventbus", 2).unwrap();
    let catalog = Arc::new(eventbus::Catalog::embedded().unwrap());
    let events: Vec<Envelope> = (0..2).map(|i| event(&catalog, i)).collect();
    let topic = eventbus::topic_of(&events[0].event_type).to_owned();
    let (connector, _) = connect(&server, "eventbus-publisher").await;
    Publisher::connect(&connector, topology.clone(), PublisherConfig::default())
        .await
        .unwrap()
        .publish_batch(&events)
        .await
        .unwrap();

    let (connector, _) = connect(&server, "eventbus-consumer").await;
    let mut config = fast_config(&topic, ConsumerMode::Unordered, "g");
    config.retry.max_attempts = 1;
    let failing = Collector::failing(|_, _| true);
    let consumer = eventbus::Consumer::new(connector, topology.clone(), config, failing).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    let (_, admin) = connect(&server, "eventbus-admin").await;
    let store = DeadLetterStore::in_redis(topology, admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = store.list(&DeadLetterFilter::default()).await.unwrap();
        if dead.len() == 2 || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(dead.len(), 2, "the consumer user did not dead-letter both");
    let ids: Vec<_> = dead.iter().map(|d| d.id).collect();
    let only = |id| DeadLetterFilter {
        ids: vec![id],
        ..Default::default()
    };
    let report = store
        .replay(&only(ids[0]), &ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(
        store.discard(&only(ids[1]), "t", false).await.unwrap(),
        [ids[1]]
    );
    assert_eq!(store.depth().await.unwrap().depth, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = store.purge(Duration::from_millis(1), false).await.unwrap();
    assert_eq!(purged, 2);
}
