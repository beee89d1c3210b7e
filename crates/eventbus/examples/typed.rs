//! Publish a typed event and handle it through a typed router.
//!
//! Needs Redis at 127.0.0.1:6379 (or `REDIS_URL`):
//! `cargo run -p eventbus --example typed`. Its streams are in the
//! namespace `typed-example`.

use std::sync::Arc;
use std::time::Duration;

use eventbus::events::{WorkItemProcessingFailed, WorkOrderCreated, WorkOrderStatus};
use eventbus::{
    Catalog, Consumer, ConsumerConfig, Delivery, HandlerError, Publisher, PublisherConfig,
    RedisConnector, RedisOptions, Router, Topology, UnknownTypes,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisConnector::new(&url, RedisOptions::default())?;
    let topology = Topology::new("typed-example", 4)?;
    let catalog = Arc::new(Catalog::embedded()?);

    // Handlers take the decoded event and the delivery (id, metadata, stream).
    let (done, mut handled) = mpsc::unbounded_channel();
    let router = Router::with_catalog(Arc::clone(&catalog))
        .unknown_types(UnknownTypes::Skip)
        .on::<WorkOrderCreated, _>(move |order: WorkOrderCreated, d: Delivery| {
            let done = done.clone();
            async move {
                println!(
                    "work order {} ({:?}): {} [event {}]",
                    order.id, order.status, order.title, d.envelope.id
                );
                done.send(d.entry_id)
                    .map_err(|_| HandlerError::retryable("the example is stopping"))
            }
        })
        .on::<WorkItemProcessingFailed, _>(
            |failed: WorkItemProcessingFailed, _d: Delivery| async move {
                // v1 events arrive here upcast to v2, with a category.
                println!(
                    "work item {} failed: {:?}",
                    failed.work_item_id, failed.error.category
                );
                Ok(())
            },
        );
    let mut config = ConsumerConfig::new("typed-example", ["work_order", "work_item"]);
    config.block = Duration::from_millis(100);
    let consumer = Consumer::new(redis.clone(), topology.clone(), config, router)?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    // Type, version and partition key (the `id` field) come from the type.
    let publisher = Publisher::connect(&redis, topology, PublisherConfig::default())
        .await?
        .with_catalog(catalog);
    let order = WorkOrderCreated {
        id: "wo-1".into(),
        kind: "invoice_reconciliation".into(),
        title: "Reconcile Q1 invoices for Acme Corp".into(),
        status: WorkOrderStatus::Pending,
        priority: None,
        requested_by: "alice@example.com".into(),
        created_at: chrono::Utc::now(),
        due_at: None,
    };
    let published = publisher.send(&order).await?;
    println!(
        "published to {} as {}",
        published.stream, published.entry_id
    );

    // Wait for this event (a rerun may first see an older one).
    let wait = async {
        while let Some(id) = handled.recv().await {
            if id == published.entry_id {
                return true;
            }
        }
        false
    };
    let seen = tokio::time::timeout(Duration::from_secs(30), wait).await == Ok(true);
    shutdown.cancel();
    running.await.expect("the consumer task")?;
    if !seen {
        return Err(eventbus::Error::InvalidEvent(
            "the event was not handled within 30 s".into(),
        ));
    }
    Ok(())
}
