//! The conformance suite in ordered mode (partitions leased to members,
//! one entry at a time per partition), against real Redis: the shared
//! scenarios plus the ones only ordered mode promises.

use eventbus_testkit::conformance::{self, Suite};
use eventbus_testkit::shared_redis_url;

fn suite() -> Suite {
    Suite::ordered(shared_redis_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_every_field() {
    conformance::round_trip(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_the_partitions_and_lose_nothing() {
    conformance::competing_consumers(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_receives_everything() {
    conformance::two_groups(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_is_retried() {
    conformance::failing_handler(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_reopen_loses_nothing() {
    conformance::close_and_reopen(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_members_entries_are_taken_over() {
    conformance::claim_from_crashed(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_redis_restart_loses_no_acknowledged_event() {
    conformance::server_restart(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_handled_in_publish_order_across_joins() {
    conformance::order_per_key(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_entry_blocks_only_its_partition() {
    conformance::failing_entry_blocks_only_its_partition(&suite()).await;
}
