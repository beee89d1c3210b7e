//! TLS to Redis (`rediss://`) and PostgreSQL (`sslmode=require`) through
//! the binary. The Redis side uses a private server with a throw-away CA,
//! trusted through `SSL_CERT_FILE` (the certificate chain and the address
//! are checked); the PostgreSQL side uses the shared server's TLS.

use std::process::Command;

use eventbus_testkit::{shared_database_url, RedisServer, TestSchema};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn eventbus(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    c.env_clear().env("EVENT_BUS_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

#[test]
fn rediss_urls_connect_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("server.key"),
        path("server.csr"),
        path("server.pem"),
        path("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=eventbus test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ] {
        let status = Command::new("openssl")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    }
    let (key, cert) = (
        std::path::PathBuf::from(key),
        std::path::PathBuf::from(cert),
    );
    let tls_port = free_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    // The private CA is trusted the way an operator would: SSL_CERT_FILE.
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let out = eventbus(
        &[("REDIS_URL", &url), ("SSL_CERT_FILE", &ca)],
        &[
            "publish",
            "--type",
            "system.probe",
            "--key",
            "k",
            "--data",
            "{}",
            "--no-validate",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without trusting the CA, the certificate is refused.
    let out = eventbus(
        &[("REDIS_URL", &url)],
        &[
            "publish",
            "--type",
            "system.probe",
            "--key",
            "k",
            "--data",
            "{}",
            "--no-validate",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It went through the TLS port: the plain port sees the entry.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let topics: Vec<String> = redis::cmd("SMEMBERS")
        .arg("eventbus:topics")
        .query(&mut conn)
        .unwrap_or_default();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("eventbus:*")
        .query(&mut conn)
        .unwrap();
    assert!(
        !keys.is_empty(),
        "nothing written over TLS (topics {topics:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sslmode_require_works() {
    let db = TestSchema::new("tls").await;
    let sep = if shared_database_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}sslmode=require", shared_database_url());
    let out = eventbus(
        &[("DATABASE_URL", &url), ("EVENT_BUS_DB_SCHEMA", db.name())],
        &["outbox", "status", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the connection really is encrypted.
    let pool = eventbus::pg::connect_pool(&url, 1, "tls-test")
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl);
}
