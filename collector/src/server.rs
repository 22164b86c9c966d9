//! Wiring: opens the staging store, binds both listeners and serves until
//! told to stop, then shuts down in order — listeners first (in-flight
//! requests finish and their commits land), the store last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ingest::{healthz, readiness};
use crate::{
    CertStore, CollectorConfig, Error, ExportState, IngestState, ListenerName, ListenerOptions,
    Metrics, Staging, StagingOptions, SystemClock, Traffic, bind, export_router, ingest_router,
    manifest_routes, serve, traffic_routes,
};

/// How often acknowledged reports past their retention are purged.
const PURGE_INTERVAL: Duration = Duration::from_mins(1);

/// A running collector: its bound addresses and the handle that stops it.
#[derive(Debug)]
pub struct RunningCollector {
    /// Where the public listener is bound (useful with port 0).
    pub public_addr: SocketAddr,
    /// Where the export listener is bound.
    pub export_addr: SocketAddr,
    /// The staging store (for tests and tools).
    pub staging: Staging,
    /// The metrics (for tests and tools).
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), Error>>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningCollector {
    /// Starts everything `config` describes on the current tokio runtime.
    pub async fn start(config: &CollectorConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
            what: format!(
                "cannot create the data folder {}",
                config.data_dir.display()
            ),
            source,
        })?;
        let metrics = Metrics::new();
        let staging = open_staging(config, &metrics).await?;

        let shutdown = CancellationToken::new();
        let mut background = Vec::new();
        let (public_tls, export_tls) = tls_configs(config, &shutdown, &mut background)?;

        let public_listener = bind(config.public.listen).await?;
        let export_listener = bind(config.export.listen).await?;
        let public_addr = local_addr(&public_listener, config.public.listen)?;
        let export_addr = local_addr(&export_listener, config.export.listen)?;

        let traffic = start_traffic(config, &metrics, &staging, &shutdown, &mut background).await?;
        let ingest = IngestState::from_config(
            config,
            staging.clone(),
            Arc::clone(&metrics),
            Arc::clone(&traffic),
        )?;
        let public_router = ingest_router(ingest).merge(manifest_routes(staging.clone()));
        let export_state =
            ExportState::from_config(config, staging.clone(), Some(Arc::clone(&metrics)))?;
        let export_router = export_router(export_state.clone())
            .merge(crate::export::with_token(
                traffic_routes(Arc::clone(&traffic)),
                &export_state,
            ))
            .merge(internal_router(staging.clone(), Arc::clone(&metrics)));

        let tasks = vec![
            tokio::spawn(serve(
                public_listener,
                public_tls,
                ListenerOptions::public(config),
                public_router,
                shutdown.child_token(),
                Some(metrics.listener_observer(ListenerName::Public)),
            )),
            tokio::spawn(serve(
                export_listener,
                export_tls,
                ListenerOptions::export(config),
                export_router,
                shutdown.child_token(),
                Some(metrics.listener_observer(ListenerName::Export)),
            )),
        ];
        background.push(spawn_purger(staging.clone(), shutdown.child_token()));

        tracing::info!(
            node_id = %config.node_id,
            public = %public_addr,
            public_tls = !config.public.plain_http,
            export = %export_addr,
            export_tls = !config.export.plain_http,
            "collector started"
        );
        Ok(Self {
            public_addr,
            export_addr,
            staging,
            metrics,
            shutdown,
            tasks,
            background,
        })
    }

    /// Stops accepting, lets in-flight requests finish (the listeners bound
    /// that by the configured grace period), then flushes and closes the
    /// store. A listener error met while running is returned here.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.cancel();
        let mut first_error = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error
                        .get_or_insert(Error::Staging(format!("a listener task failed: {e}")));
                }
            }
        }
        for task in self.background {
            // Background tasks only loop until cancelled; a panic there has
            // already been logged by the runtime and must not stop the close.
            let _ = task.await;
        }
        self.staging.close().await?;
        first_error.map_or(Ok(()), Err)
    }
}

/// The traffic monitor, with its background task (sweeps and trust-score
/// writes) started when it is enabled.
async fn start_traffic(
    config: &CollectorConfig,
    metrics: &Arc<Metrics>,
    staging: &Staging,
    shutdown: &CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Arc<Traffic>, Error> {
    let traffic = Arc::new(Traffic::new(
        config,
        Arc::new(SystemClock),
        Some(Arc::clone(metrics)),
    ));
    if traffic.enabled() {
        background.push(
            traffic
                .start(
                    staging.clone(),
                    Duration::from_secs(config.trust.flush_secs),
                    shutdown.child_token(),
                )
                .await?,
        );
    }
    Ok(traffic)
}

/// Opens the staging store, reporting commits to `metrics`.
async fn open_staging(config: &CollectorConfig, metrics: &Arc<Metrics>) -> Result<Staging, Error> {
    let mut options = StagingOptions::from_config(
        config.staging_path(),
        config.node_id.clone(),
        &config.staging,
    );
    let commit_metrics = Arc::clone(metrics);
    options.on_commit = Some(Arc::new(move |took, n| commit_metrics.commit(took, n)));
    let restart_metrics = Arc::clone(metrics);
    options.on_wal_restart = Some(Arc::new(move |took| restart_metrics.wal_restart(took)));
    // Opening runs migrations and may wait on a lock: keep it off the
    // async workers.
    tokio::task::spawn_blocking(move || Staging::open(options))
        .await
        .map_err(|e| Error::Staging(format!("opening the store panicked: {e}")))?
}

type ServerTls = Option<Arc<rustls::ServerConfig>>;

/// The TLS configurations of the public and export listeners (`None` for
/// plain HTTP), with the certificate reloader started when TLS is used.
fn tls_configs(
    config: &CollectorConfig,
    shutdown: &CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<(ServerTls, ServerTls), Error> {
    let needs_tls = !config.public.plain_http || !config.export.plain_http;
    let certs = if needs_tls {
        let store = CertStore::load_or_generate(&config.tls, &config.data_dir)?;
        background.push(store.spawn_reloader(
            Duration::from_secs(config.tls.reload_check_secs),
            shutdown.child_token(),
        ));
        Some(store)
    } else {
        None
    };
    let public_tls = match (&certs, config.public.plain_http) {
        (Some(store), false) => Some(store.server_config(None)?),
        _ => None,
    };
    let export_tls = match (&certs, config.export.plain_http) {
        (Some(store), false) => Some(store.server_config(config.export.client_ca.as_deref())?),
        _ => None,
    };

    Ok((public_tls, export_tls))
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Listen {
        addr: configured,
        source,
    })
}

/// Health and metrics on the export listener (the internal network).
fn internal_router(staging: Staging, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(internal_readyz))
        .route("/metrics", get(render_metrics))
        .with_state(InternalState { staging, metrics })
}

#[derive(Debug, Clone)]
struct InternalState {
    staging: Staging,
    metrics: Arc<Metrics>,
}

async fn internal_readyz(State(state): State<InternalState>) -> Response {
    readiness(&state.staging, ListenerName::Export).await
}

async fn render_metrics(State(state): State<InternalState>) -> Response {
    match state.metrics.render(&state.staging).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Purges acknowledged reports past their retention every minute.
fn spawn_purger(staging: Staging, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A purge of a large backlog is hundreds of chunks, each a
            // transaction and a sync: a shutdown does not wait for them all
            // (the chunk under way still commits; the rest is purged after
            // the restart).
            let purged = tokio::select! {
                () = shutdown.cancelled() => return,
                purged = staging.purge() => purged,
            };
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged acknowledged reports past retention"),
                Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
            }
        }
    })
}

/// Serves until SIGTERM or SIGINT: what `lineprobe-collector serve` runs.
pub(crate) fn run_until_signal(config: &CollectorConfig) -> Result<(), Error> {
    init_logging(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "cannot start the async runtime".to_owned(),
            source,
        })?;
    runtime.block_on(async {
        let running = RunningCollector::start(config).await?;
        // Printed (not only logged) so that scripts and tests started with
        // port 0 learn the addresses.
        println!(
            "lineprobe-collector: public {}://{} export {}://{}",
            if config.public.plain_http {
                "http"
            } else {
                "https"
            },
            running.public_addr,
            if config.export.plain_http {
                "http"
            } else {
                "https"
            },
            running.export_addr,
        );
        wait_for_signal().await?;
        tracing::info!(grace_secs = config.shutdown.grace_secs, "shutting down");
        running.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| Error::Io {
        what: "cannot install signal handlers".to_owned(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), Error> {
    tokio::signal::ctrl_c().await.map_err(|source| Error::Io {
        what: "cannot wait for Ctrl-C".to_owned(),
        source,
    })
}

fn init_logging(config: &CollectorConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(lineprobe_shared::log_in_colour())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if config.log.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
