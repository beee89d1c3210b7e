//! deploy/redis-backup.sh, the production Redis backup job, against a
//! private Redis loaded with deploy/users.acl: as the `eventbus-backup`
//! user it produces a snapshot and a copy of the AOF; refused, with a wrong
//! password, or pointed at the wrong directory it fails loudly (exit 1,
//! the reason on stderr) and leaves no backup behind; no password is ever
//! on a command line of the deploy files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eventbus_testkit::RedisServer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn server() -> RedisServer {
    let acl = root().join("deploy/users.acl");
    RedisServer::start_with(&["--aclfile", acl.to_str().unwrap()])
}

/// The script, once, as `user` with `password` (in REDISCLI_AUTH).
fn backup(server: &RedisServer, user: &str, password: &str, data: &Path, to: &Path) -> Output {
    Command::new("sh")
        .arg(root().join("deploy/redis-backup.sh"))
        .arg("once")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", server.port().to_string())
        .env("REDIS_BACKUP_USER", user)
        .env("REDISCLI_AUTH", password)
        .env("DATA_DIR", data)
        .env("BACKUP_DIR", to)
        .env("BACKUP_TIMEOUT", "60")
        .output()
        .expect("run sh")
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("redis")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A backup as `eventbus-backup`, which must succeed.
fn backup_ok(server: &RedisServer, to: &Path) -> String {
    let out = backup(
        server,
        "eventbus-backup",
        "CHANGE-ME-backup",
        server.dir(),
        to,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_backup_user_produces_a_snapshot_and_the_aof() {
    let server = server();
    let to = tempfile::tempdir().unwrap();
    let stdout = backup_ok(&server, to.path());
    assert!(stdout.contains("redis-backup: saved"), "{stdout}");
    let made = backups(to.path());
    assert_eq!(made.len(), 1, "{made:?}");
    let rdb = std::fs::metadata(made[0].join("dump.rdb")).expect("a snapshot");
    assert!(rdb.len() > 0);
    assert!(
        made[0].join("appendonlydir").is_dir(),
        "the AOF directory is copied"
    );
    // A second run makes a second, complete backup.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup_ok(&server, to.path());
    let made = backups(to.path());
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made
        .iter()
        .all(|d| !d.to_string_lossy().ends_with(".partial")));
}

#[test]
fn a_refused_or_misconfigured_backup_fails_loudly_and_leaves_nothing() {
    let server = server();
    let cases: [(&str, &str, PathBuf, &str); 3] = [
        // The admin user may not BGSAVE (-@dangerous): the old job's user.
        (
            "eventbus-admin",
            "CHANGE-ME-admin",
            server.dir().to_owned(),
            "refused",
        ),
        (
            "eventbus-backup",
            "S3ntinel-wrong-password",
            server.dir().to_owned(),
            "refused",
        ),
        (
            "eventbus-backup",
            "CHANGE-ME-backup",
            PathBuf::from("/nonexistent/redis-data"),
            "no snapshot",
        ),
    ];
    for (user, password, data, why) in cases {
        let to = tempfile::tempdir().unwrap();
        let out = backup(&server, user, password, &data, to.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{user}: {stderr}");
        assert!(stderr.contains(why), "{user}: {stderr}");
        assert!(
            !stderr.contains(password),
            "the password is printed: {stderr}"
        );
        assert!(
            backups(to.path()).is_empty(),
            "{user}: a backup was left behind"
        );
    }
    // No password at all: refused before anything runs.
    let to = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(root().join("deploy/redis-backup.sh"))
        .arg("once")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BACKUP_DIR", to.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
}

#[test]
fn no_deploy_file_puts_a_redis_password_on_a_command_line() {
    for file in [
        "deploy/docker-compose.yml",
        "deploy/docker-compose.prod.yml",
        "deploy/redis-backup.sh",
        "deploy/eventbus-with-secrets.sh",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for flag in ["--pass ", "--pass=", " -a "] {
            assert!(
                !text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .any(|l| l.contains("redis-cli") && l.contains(flag)),
                "{file}: redis-cli {flag}"
            );
        }
    }
    let prod = std::fs::read_to_string(root().join("deploy/docker-compose.prod.yml")).unwrap();
    assert!(prod.contains("redis-backup.sh") && prod.contains("eventbus-backup"));
}
