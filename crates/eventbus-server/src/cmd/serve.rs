//! `eventbus serve`: the HTTP admin API, the outbox relay (with
//! `DATABASE_URL`), the scheduler of delayed events, the stream trimmer, the dead-letter alerter (with
//! `EVENT_BUS_ALERT_WEBHOOK_URL`) and the consumers of `--consumers FILE`
//! in one process.
//!
//! Shutdown: the first SIGINT/SIGTERM cancels one token. The HTTP server
//! stops accepting and finishes the requests in flight; the relay finishes
//! its batch; consumers finish the handlers they started (up to their
//! shutdown timeout) and acknowledge them; the alerter and the gauge task
//! stop at their next tick. All of
//! them are owned by a `JoinSet`, and `run` returns once every one ended.

use eventbus::pg::{Relay, RelayConfig};
use eventbus::{Publisher, PublisherConfig};
use tokio::task::JoinSet;

use crate::cli::serve::ServeArgs;
use crate::config::serve::ServeSettings;
use crate::config::{Env, Settings};
use crate::error::{CliError, Result};
use crate::http::{self, AppState, PgState};

use crate::http::metrics::GAUGE_INTERVAL;

/// Runs `eventbus serve`.
pub(crate) async fn run(args: ServeArgs, settings: &Settings) -> Result<()> {
    let serve = ServeSettings::load(&args, &Env::from_process())?;
    let consumers = match &args.consumers {
        Some(path) => super::serve_consumers::load(path)?,
        None => Vec::new(),
    };
    let addr = serve.addr.expect("load sets the address");
    let topology = settings.topology()?;
    let connector = settings.connector()?;
    let redis = connector.shared().await?;
    let catalog = super::schemas::load_catalog(settings)?;
    let publisher = Publisher::connect(
        &connector,
        topology.clone(),
        PublisherConfig {
            max_len: settings.max_len,
            max_event_bytes: settings.pg.max_event_bytes.max(1024 * 1024),
            max_delay: settings.max_delay,
            ..PublisherConfig::default()
        },
    )
    .await?;
    let pg = if settings.pg.has_database() {
        Some(PgState {
            pool: settings.pg.pool(settings.pg.pool_size, "serve").await?,
            schema: settings.pg.schema.clone(),
            outbox: settings.pg.outbox(&topology)?,
        })
    } else {
        None
    };
    let state = AppState {
        redis,
        topology: topology.clone(),
        publisher: publisher.clone(),
        catalog,
        pg: pg.clone(),
        metrics: http::metrics::prometheus(),
    };
    let options = serve.http_options();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Input(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().unwrap_or(addr);

    let shutdown = super::shutdown_on_signal();
    let mut tasks = JoinSet::new();
    let mut relay_stats = None;
    if let (Some(pg), false) = (&pg, args.no_relay) {
        let relay = Relay::new(
            pg.pool.clone(),
            publisher,
            pg.schema.clone(),
            RelayConfig {
                retention: settings.pg.outbox_retention,
                ..RelayConfig::default()
            },
        )?;
        relay_stats = Some(relay.stats());
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = relay.run(token).await {
                tracing::error!(error = %e, "the relay stopped");
            }
        });
    }
    if let Some(alert) = settings.alert.config(topology.namespace()) {
        let alerter = eventbus::alert::Alerter::new(alert, http::dlq_store(&state))?;
        tasks.spawn(alerter.run(shutdown.clone()));
    }
    // Ack-aware retention of every stream (and the retention and Redis
    // memory gauges), taking turns with the other processes per stream.
    tasks.spawn(
        eventbus::retention::Trimmer::new(state.redis.clone(), topology.clone(), settings.trim)
            .run(shutdown.clone()),
    );
    // Scheduled delivery (docs/scheduled.md): every serve and relay runs a
    // scheduler; their moves are atomic, so any number may run.
    let scheduler = super::scheduled::scheduler(&connector, topology.clone(), settings).await?;
    let token = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = scheduler.run(token).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    });
    tasks.spawn(http::metrics::refresh_gauges(
        state.clone(),
        relay_stats,
        GAUGE_INTERVAL,
        shutdown.clone(),
    ));

    for (name, consume) in consumers {
        // A child token: `--max-events` ends this consumer, not the server.
        let token = shutdown.child_token();
        let settings = settings.clone();
        tasks.spawn(async move {
            tracing::info!(consumer = %name, "starting consumer");
            match super::consume::run_with(consume, &settings, token, false).await {
                Ok(()) => tracing::info!(consumer = %name, "consumer stopped"),
                Err(e) => tracing::error!(consumer = %name, error = %e, "consumer failed"),
            }
        });
    }

    let router = http::router(state, &options);
    tracing::info!(
        addr = %local,
        relay = pg.is_some() && !args.no_relay,
        auth = options.tokens.admin.is_some() || options.tokens.read.is_some(),
        "eventbus serve listening"
    );
    let served = http::serve(listener, router, &options, shutdown.clone()).await;
    // The server ended (signal, or an error): stop everything else too.
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("eventbus serve stopped");
    served.map_err(|e| CliError::Input(format!("the HTTP server failed: {e}")))
}
