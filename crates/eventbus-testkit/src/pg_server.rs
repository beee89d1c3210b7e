use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private PostgreSQL server for one test: `initdb` in a temp dir, a free
/// port, trust auth, fsync off (it is thrown away). Tests that stop or kill
/// PostgreSQL use one of these, never the shared server. Killed and deleted
/// when dropped.
///
/// `initdb` and `postgres` refuse to run as root, so when the tests run as
/// root the server runs as the `postgres` user (`runuser`).
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn as_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

fn command(program: PathBuf) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// Creates a cluster and starts it.
    ///
    /// # Panics
    /// If PostgreSQL's binaries are missing or it does not come up in 30 s.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("eventbus-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if as_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the private PostgreSQL directory failed");
        }
        let data = dir.join("data");
        let out = command(bin("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            port: 0,
            dir,
            child: None,
        };
        for _ in 0..5 {
            server.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            if server.spawn(Duration::from_secs(30)) {
                return server;
            }
            server.kill();
        }
        panic!("private PostgreSQL did not start");
    }

    fn spawn(&mut self, within: Duration) -> bool {
        let child = command(bin("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            let ready = Command::new(bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server (SIGKILL to the postmaster; its backends exit as
    /// they notice) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // runuser forwards nothing on SIGKILL: kill the postmaster by its pid file.
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) {
                if let Some(pid) = pid.lines().next() {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                }
            }
            let _ = c.kill();
            let _ = c.wait();
            // backends exit once the postmaster is gone; give them a moment
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts it again on the same data and port.
    ///
    /// # Panics
    /// If it does not come back within 30 s.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..20 {
            if self.spawn(Duration::from_secs(30)) {
                return;
            }
            self.kill();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("private PostgreSQL did not restart");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
