use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A private `redis-server` for one test: free port, its own temp directory,
/// AOF persistence with `appendfsync always` (an acknowledged write survives
/// a kill). Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments (e.g. `--requirepass`, `--aclfile`).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not come up in 10 s.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments, kept across
    /// restarts. With `--requirepass` or `--aclfile`, readiness is checked
    /// by the answer to `PING` being an authentication error or `PONG`.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("eventbus-redis-")
                .tempdir()
                .expect("create temp dir for redis");
            let mut server = RedisServer {
                port: free_port(),
                dir,
                child: None,
                extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            };
            if server.spawn() {
                return server;
            }
            // dropped: the process is killed and the directory removed
        }
        panic!("could not start a private redis-server");
    }

    fn spawn(&mut self) -> bool {
        let child = redis_server_command(self.port, self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: port taken or bad config
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    match redis::cmd("PING").query::<String>(&mut c) {
                        Ok(_) => return true,
                        Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                            return true
                        }
                        Err(e) if e.code() == Some("NOAUTH") => return true,
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's data directory (AOF, snapshots, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (no shutdown save) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    ///
    /// # Panics
    /// If it does not come back within 20 s.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn_again(), "private redis-server did not restart");
    }

    fn spawn_again(&mut self) -> bool {
        // The port may linger briefly after a kill; try a few times.
        for _ in 0..20 {
            if self.spawn() {
                return true;
            }
            self.kill();
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp dir path is UTF-8")
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// `redis-server` on `port` with its files in `dir`, persisting every write
/// (AOF, `appendfsync always`, no RDB), logging to `redis.log`, output
/// discarded: what every private server of the testkit starts from (add
/// arguments; later ones override earlier ones).
pub(crate) fn redis_server_command(port: u16, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--dir", path_str(dir)])
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "always"])
        .args(["--save", ""])
        .args(["--daemonize", "no"])
        .args(["--logfile", "redis.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
