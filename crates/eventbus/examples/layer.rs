//! A handler layer of your own: counts deliveries per event type and logs
//! slow attempts. Runs against the local Redis:
//! `cargo run -p eventbus --example layer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::layer::Layer;
use eventbus::{
    handler_fn, Consumer, ConsumerConfig, Delivery, Envelope, Handler, HandlerError, Publisher,
    PublisherConfig, RedisConnector, RedisOptions, Topology,
};
use tokio_util::sync::CancellationToken;

/// The layer: configuration shared by every handler it wraps.
#[derive(Clone, Default)]
struct CountLayer {
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl<H> Layer<H> for CountLayer {
    type Service = Counted<H>;

    fn layer(&self, inner: H) -> Counted<H> {
        Counted {
            inner,
            counts: self.counts.clone(),
        }
    }
}

/// The handler it builds: does its part, then calls the inner handler.
struct Counted<H> {
    inner: H,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl<H: Handler> Handler for Counted<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(delivery.envelope.event_type.clone())
            .or_default() += 1;
        let started = Instant::now();
        let result = self.inner.handle(delivery).await;
        if started.elapsed() > Duration::from_millis(100) {
            eprintln!("slow attempt: {:?}", started.elapsed());
        }
        result
    }
}

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let redis = RedisConnector::new("redis://127.0.0.1:6379", RedisOptions::default())?;
    let namespace = format!("example-layer-{}", std::process::id());
    let topology = Topology::new(namespace, 4)?;
    let publisher =
        Publisher::connect(&redis, topology.clone(), PublisherConfig::default()).await?;
    for i in 0..10 {
        let key = format!("wi-{i}");
        publisher
            .publish(&Envelope::new(
                "work_item.processing_started",
                key.clone(),
                serde_json::json!({"id": key}),
            ))
            .await?;
    }

    let counts = CountLayer::default();
    let done = CancellationToken::new();
    let stop = done.clone();
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumer = Consumer::builder(
        redis,
        topology,
        ConsumerConfig::new("example", ["work_item"]),
    )
    .layer(counts.clone())
    .handler(handler_fn(move |_d: Delivery| {
        let (seen, stop) = (seen.clone(), stop.clone());
        async move {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 10 {
                stop.cancel();
            }
            Ok(())
        }
    }))?;
    consumer.run(done).await?;
    println!("deliveries per type: {:?}", counts.counts.lock().unwrap());
    Ok(())
}
