use eventbus::Topology;

/// The shared Redis used by tests that do not kill or restart it:
/// `EVENTBUS_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn shared_redis_url() -> String {
    std::env::var("EVENTBUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique namespace (`test-<prefix>-<random>`) whose keys are deleted on drop.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    url: String,
}

impl TestNamespace {
    /// A fresh namespace on the Redis at `url`.
    pub fn new(url: impl Into<String>, prefix: &str) -> Self {
        let rand = uuid::Uuid::new_v4().simple().to_string();
        TestNamespace {
            name: format!("test-{prefix}-{}", &rand[..12]),
            url: url.into(),
        }
    }

    /// The namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A topology in this namespace.
    pub fn topology(&self, partitions: u32) -> Topology {
        Topology::new(&self.name, partitions).expect("valid test topology")
    }

    /// Deletes every key of the namespace now.
    pub fn cleanup(&self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(std::time::Duration::from_secs(2))
        else {
            return; // a private server that is already gone
        };
        let keys: Vec<String> = match redis::cmd("KEYS")
            .arg(format!("{}:*", self.name))
            .query(&mut conn)
        {
            Ok(k) => k,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        self.cleanup();
    }
}
