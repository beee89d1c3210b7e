//! The private servers start, answer, survive a kill and restart with their data.

use eventbus_testkit::{PgServer, RedisServer};

#[tokio::test]
async fn private_postgres_restarts_with_its_data() {
    let mut pg = PgServer::start();
    let pool = eventbus::pg::connect_pool(&pg.url(), 2, "t").await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        .execute(&pool)
        .await
        .unwrap();
    pg.kill();
    assert!(
        sqlx::query("SELECT 1").execute(&pool).await.is_err(),
        "killed server still answers"
    );
    tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .map(|pg| async move {
        let pool = eventbus::pg::connect_pool(&pg.url(), 2, "t").await.unwrap();
        let (x,): (i32,) = sqlx::query_as("SELECT x FROM kept")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(x, 42);
    })
    .unwrap()
    .await;
}

#[test]
fn private_redis_restarts_with_its_data() {
    let mut r = RedisServer::start();
    let client = redis::Client::open(r.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    r.restart();
    let mut c = client.get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
}
