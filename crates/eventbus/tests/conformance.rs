//! The conformance suite, competing-consumers mode, against real Redis.

use eventbus_testkit::conformance::{self, Suite};
use eventbus_testkit::shared_redis_url;

fn suite() -> Suite {
    Suite::unordered(shared_redis_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_every_field() {
    conformance::round_trip(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_lose_nothing() {
    conformance::competing_consumers(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_receives_everything() {
    conformance::two_groups(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_is_redelivered() {
    conformance::failing_handler(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_reopen_loses_nothing() {
    conformance::close_and_reopen(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_consumer_entries_are_claimed() {
    conformance::claim_from_crashed(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_redis_restart_loses_no_acknowledged_event() {
    conformance::server_restart(&suite()).await;
}
