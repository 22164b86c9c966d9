use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    DemoOptions, Error, LineFilter, Pipeline, PipelineRun, PullSettings, PullSink, PulledLine,
    Puller, RawIdRange, ReportArgs, ReportScheduler, SourceWatch, Store, SyncConfig, UserCommand,
    load_resolver_cache, print_verdict_table, run_user_command, save_resolver_cache,
    serve_backoffice, verdict_rows, write_verdicts_csv,
};

/// LineProbe internal side: pulls probe reports one way from the collectors
/// and judges each line's compliance; batch reports and the back office.
#[derive(Debug, Parser)]
#[command(name = "lineprobe-sync", version, about, long_about = None)]
pub struct Cli {
    /// Sync configuration (TOML); embedded defaults without it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Internal database URL (`sqlite://…` or `postgres://…`), overriding the config.
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the internal side can be asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole system on this machine: an in-process collector on loopback,
    /// built-in reports and one live probe over HTTPS, a one-way pull into an
    /// embedded database, the pipeline, and the verdict table.
    Demo {
        /// Keep the demo's files (collector staging, certificate, database) here.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Do not run the live probe from this machine.
        #[arg(long)]
        no_live_probe: bool,
    },
    /// Pull new reports from every configured collector into the internal
    /// database, then process them.
    Pull {
        /// Pull once and exit instead of every configured interval.
        #[arg(long)]
        once: bool,
        /// Only pull; leave the pipeline for later.
        #[arg(long)]
        no_process: bool,
    },
    /// Run the daemon: every collector pulled on its own schedule each configured
    /// interval, and the pipeline run on what was pulled as soon as it is stored.
    Run,
    /// Process the pulled reports that are still pending.
    Process,
    /// Run the verdicts again (after the IP data changed) for reports received
    /// since a date; changed verdicts are recorded with the data versions used.
    Reprocess {
        /// Only reports received on or after this day (YYYY-MM-DD, from its midnight in
        /// `report.utc_offset`) or time (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// The quarantined reports instead: validated and judged again (after the
        /// catalogs or the program changed); those that pass leave quarantine.
        #[arg(long)]
        quarantined: bool,
    },
    /// List the current verdicts: declared vs actual, first public hop, reasons.
    Verdicts {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only lines declared in this province (ISO code or name).
        #[arg(long)]
        province: Option<String>,
        /// Only lines declared in this city (name or GB/T 2260 code).
        #[arg(long)]
        city: Option<String>,
        /// Only lines declared on this carrier (id or name).
        #[arg(long)]
        carrier: Option<String>,
        /// Only lines whose actual carrier is this one.
        #[arg(long)]
        actual_carrier: Option<String>,
        /// Only this verdict (`compliant`, `non_compliant`, `violating_ip`, `proxy_suspected`,
        /// `indeterminate`).
        #[arg(long)]
        verdict: Option<String>,
        /// Only lines whose current verdict came from a low-trust source
        /// (`low`) or from a trusted one (`normal`).
        #[arg(long, value_name = "low|normal")]
        trust: Option<String>,
        /// Only lines seen on or after this day (YYYY-MM-DD, from its midnight in
        /// `report.utc_offset`) or time (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Most lines listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Lines skipped first (paging).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// List quarantined reports with their reasons.
    Quarantine {
        /// Most reports listed.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show the pull cursors of every collector and the database counts.
    Status,
    /// Serve the compliance back office (web UI) until Ctrl-C or SIGTERM; see
    /// `[backoffice]` in the configuration. `run` serves it too when
    /// `backoffice.enabled = true`.
    Serve,
    /// Write the batch compliance report of a period (day, week, month) as CSV, JSON and HTML,
    /// or catch up on every period missed.
    Report(ReportArgs),
    /// Manage back-office users: add, passwd, disable, enable, role, list.
    #[command(subcommand)]
    User(UserCommand),
    /// Read traceroute text: parse it, or find its first public hop.
    #[command(subcommand)]
    Trace(TraceCommand),
}

/// Output formats of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// JSON.
    Json,
    /// CSV with a header row.
    Csv,
}

/// The trace tools.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Parse traceroute output (any supported tool and language) and print its hops as JSON.
    Parse {
        /// The file to read; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Find the first public hop of a traceroute output and classify every hop.
    FirstHop {
        /// The file to read; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Treat this CIDR as public (labs built on documentation ranges); repeatable.
        #[arg(long = "public-cidr", value_name = "CIDR")]
        public_cidrs: Vec<String>,
    },
}

/// Runs the internal side with parsed arguments, reading `stdin` where a
/// command reads standard input and writing results to `stdout`.
pub fn run(cli: &Cli, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), Error> {
    match &cli.command {
        Command::Trace(TraceCommand::Parse { file }) => {
            crate::trace::parse(file.as_deref(), stdin, stdout)
        }
        Command::Trace(TraceCommand::FirstHop { file, public_cidrs }) => {
            crate::trace::first_hop(file.as_deref(), public_cidrs, stdin, stdout)
        }
        Command::User(user) => runtime()?.block_on(async {
            let config = SyncConfig::load(
                cli.config.as_deref(),
                std::env::vars(),
                cli.database.as_deref(),
            )?;
            let store = Store::open(&config.database_url()).await?;
            let result = run_user_command(&store, user, stdin, stdout).await;
            store.close().await;
            result
        }),
        other => runtime()?.block_on(run_async(cli, other, stdout)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

async fn run_async(cli: &Cli, command: &Command, stdout: &mut dyn Write) -> Result<(), Error> {
    if let Command::Demo {
        data_dir,
        no_live_probe,
    } = command
    {
        let options = DemoOptions {
            data_dir: data_dir.clone(),
            no_live_probe: *no_live_probe,
        };
        crate::run_demo(&options, stdout, &mut std::io::stderr()).await?;
        return Ok(());
    }
    let config = SyncConfig::load(
        cli.config.as_deref(),
        std::env::vars(),
        cli.database.as_deref(),
    )?;
    // Lists and reports of what was pulled: a database that is not there
    // is a mistyped path, whose new, empty database would answer with
    // nothing as if nothing had been found.
    let lists = matches!(
        command,
        Command::Verdicts { .. } | Command::Report(_) | Command::Quarantine { .. }
    );
    let url = config.database_url();
    let store = if lists {
        Store::open_existing(&url).await?
    } else {
        Store::open(&url).await?
    };
    let result = match command {
        Command::Pull { once, no_process } => {
            if *once {
                pull_round(&config, &store, !*no_process).await
            } else {
                daemon(&config, &store, !*no_process, false).await
            }
        }
        Command::Run => daemon(&config, &store, true, true).await,
        Command::Serve => {
            let shutdown = CancellationToken::new();
            let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
            let served = serve_backoffice(&config, store.clone(), shutdown).await;
            signals.abort();
            served
        }
        Command::Process => process_once(&config, &store).await,
        Command::Reprocess { since, quarantined } => {
            let offset = day_offset(&config)?;
            let since_ms = since
                .as_deref()
                .map(|s| parse_since(s, offset))
                .transpose()?;
            let mut sources = source_watch(&config);
            let pipeline = pipeline(&config, &store).await?;
            let batch = config.pipeline.batch;
            let run = if *quarantined {
                pipeline
                    .reprocess_quarantined(&store, since_ms, batch, log_progress)
                    .await?
            } else {
                pipeline
                    .reprocess(&store, since_ms, batch, log_progress)
                    .await?
            };
            save_resolver_cache(pipeline.chain(), &store).await?;
            print_run(&run);
            judge_again_if_changed(&config, &store, &mut sources, run.raw_ids).await
        }
        Command::Verdicts { .. } => list_verdicts(&config, &store, command, stdout).await,
        Command::Report(args) => crate::report_command(&config, &store, args, stdout).await,
        Command::Quarantine { limit } => {
            let rows = store.quarantined(*limit, 0).await?;
            serde_json::to_writer_pretty(&mut *stdout, &rows)
                .map_err(|e| Error::Output(e.into()))?;
            writeln!(stdout).map_err(Error::Output)
        }
        Command::Status => {
            let status = serde_json::json!({
                "database": store.backend_name(),
                // Which one: a mistyped path shows here (and its counts
                // are zero).
                "database_location": store.describe(),
                "collectors": store.cursors().await?,
                "counts": store.counts().await?,
            });
            serde_json::to_writer_pretty(&mut *stdout, &status)
                .map_err(|e| Error::Output(e.into()))?;
            writeln!(stdout).map_err(Error::Output)
        }
        _ => Ok(()),
    };
    store.close().await;
    result
}

/// `verdicts`: the current verdicts the filters select, in `format`.
async fn list_verdicts(
    config: &SyncConfig,
    store: &Store,
    command: &Command,
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    let Command::Verdicts { format, .. } = command else {
        return Ok(());
    };
    let catalog = config.catalog()?;
    let filter = verdict_filter(&catalog, day_offset(config)?, command)?;
    let rows = verdict_rows(store, &catalog, &filter).await?;
    match format {
        Format::Table => print_verdict_table(stdout, &catalog, &rows).map_err(Error::Output),
        Format::Csv => write_verdicts_csv(stdout, &rows),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *stdout, &rows)
                .map_err(|e| Error::Output(e.into()))?;
            writeln!(stdout).map_err(Error::Output)
        }
    }
}

/// The store's filter for the `verdicts` flags, names normalised to the
/// catalog's ids and codes as the lines hold them, a day taken in
/// `utc_offset`.
fn verdict_filter(
    catalog: &lineprobe_shared::Catalog,
    utc_offset: chrono::FixedOffset,
    command: &Command,
) -> Result<LineFilter, Error> {
    let Command::Verdicts {
        province,
        city,
        carrier,
        actual_carrier,
        verdict,
        trust,
        since,
        limit,
        offset,
        ..
    } = command
    else {
        return Ok(LineFilter::default());
    };
    let province = province
        .as_deref()
        .map(|p| normalise_province(catalog, p))
        .transpose()?;
    // A city name is looked up within the province asked for: several
    // names (朝阳, Suzhou, Taizhou…) belong to cities of two provinces, and
    // without the province the catalog cannot tell which is meant, so the
    // name itself was compared with the stored codes and matched nothing.
    let province_code = province
        .as_deref()
        .and_then(|p| lineprobe_shared::ProvinceCode::new(p).ok());
    if city.as_deref().is_some_and(|c| c.trim().is_empty()) {
        // An empty city would be compared as it is and match no line.
        return Err(Error::Config {
            key: "--city".to_owned(),
            reason: "is empty: give a city's name or code (such as 深圳 or 440300), \
                     or leave --city out"
                .to_owned(),
        });
    }
    let city = city.as_deref().map(|c| {
        catalog
            .city(province_code.as_ref(), c)
            .and_then(|c| c.code.as_ref().map(|c| c.as_str().to_owned()))
            .unwrap_or_else(|| c.to_owned())
    });
    Ok(LineFilter {
        province,
        province_not_declared: false,
        city,
        declared_carrier: carrier
            .as_deref()
            .map(|c| normalise_carrier(catalog, "--carrier", c))
            .transpose()?,
        carrier_not_declared: false,
        actual_carrier: actual_carrier
            .as_deref()
            .map(|c| normalise_carrier(catalog, "--actual-carrier", c))
            .transpose()?,
        verdict: verdict.as_deref().map(check_verdict).transpose()?,
        low_trust: match trust.as_deref() {
            None => None,
            Some("low") => Some(true),
            Some("normal") => Some(false),
            Some(other) => {
                return Err(Error::Config {
                    key: "--trust".to_owned(),
                    reason: format!("{other:?} is not a trust level: write low or normal"),
                });
            }
        },
        seen_since_ms: since
            .as_deref()
            .map(|s| parse_since(s, utc_offset))
            .transpose()?,
        seen_until_ms: None,
        limit: *limit,
        offset: *offset,
    })
}

/// The pipeline of the configuration, its lookup services' caches loaded
/// from the database.
async fn pipeline(config: &SyncConfig, store: &Store) -> Result<Pipeline, Error> {
    let pipeline = open_pipeline(config)?;
    load_caches(&pipeline, store).await?;
    Ok(pipeline)
}

/// The pipeline of the configuration, its address sources opened from
/// their files; the database is not read.
fn open_pipeline(config: &SyncConfig) -> Result<Pipeline, Error> {
    let catalog = config.catalog()?;
    let chain = Arc::new(config.chain(&catalog)?);
    Ok(Pipeline::new(catalog, chain, config.classifier()?)
        .with_trust_policy(config.trust_policy())
        .with_source_retry(config.pipeline.source_retry()))
}

/// Loads the lookup services' cached answers from the database into the
/// pipeline's sources.
async fn load_caches(pipeline: &Pipeline, store: &Store) -> Result<(), Error> {
    let cached = load_resolver_cache(pipeline.chain(), store).await?;
    if cached > 0 {
        tracing::debug!(answers = cached, "resolver cache loaded");
    }
    Ok(())
}

fn puller(config: &SyncConfig) -> Result<Puller, Error> {
    Puller::new(
        &config.collectors,
        PullSettings {
            interval_s: config.pull.interval_s,
            max_pages_per_round: config.pull.max_pages_per_round,
        },
    )
}

/// One pull round over every collector, then the pipeline.
async fn pull_round(config: &SyncConfig, store: &Store, process: bool) -> Result<(), Error> {
    if config.collectors.is_empty() {
        return Err(Error::Config {
            key: "collector".to_owned(),
            reason: "no collector is configured: add a [[collector]] table with name, url and \
                     token_env (see config/sync.example.toml)"
                .to_owned(),
        });
    }
    let puller = puller(config)?;
    // The puller logs a round that pulled something or failed (a failure
    // as a warning); a one-off pull also says which collectors had nothing
    // new, and ends with the exit code and one message.
    let rounds = puller.pull_once(store).await;
    for round in rounds.iter().filter(|r| r.error.is_none() && r.pulled == 0) {
        tracing::info!(collector = %round.collector, cursor = round.cursor, "nothing new");
    }
    let failed: Vec<(&str, &str)> = rounds
        .iter()
        .filter_map(|r| Some((r.collector.as_str(), r.error.as_deref()?)))
        .collect();
    let failure = collector_failure(&failed);
    if process {
        process_once(config, store).await?;
    }
    // The healthy collectors were pulled and processed; the exit code
    // still tells a scheduler that one was not.
    failure.map_or(Ok(()), Err)
}

/// One run of the pipeline over the pending reports (`process`, `pull
/// --once`), with the address data as its files are at the start; see
/// [`judge_again_if_changed`] for a change while it runs.
async fn process_once(config: &SyncConfig, store: &Store) -> Result<(), Error> {
    let mut sources = source_watch(config);
    let pipeline = pipeline(config, store).await?;
    let run = pipeline
        .run_pending(store, config.pipeline.batch, log_progress)
        .await?;
    save_resolver_cache(pipeline.chain(), store).await?;
    print_run(&run);
    judge_again_if_changed(config, store, &mut sources, run.raw_ids).await
}

/// How long a one-off run waits for address data files that changed while
/// it ran to settle: a command run by a scheduler should not hang for long.
const ONE_OFF_PATIENCE: std::time::Duration = std::time::Duration::from_secs(90);

/// The watch on the address sources' data files, made before the sources
/// are opened: a file replaced while they open is then a change, not the
/// state taken as loaded.
fn source_watch(config: &SyncConfig) -> SourceWatch {
    SourceWatch::new(
        config.resolve.data_files(&config.base_dir),
        config.resolve.reload_settle(),
    )
}

/// After a one-off run that judged the reports with ids in `ids`: when the
/// address data files changed while it ran, waits for the change to settle
/// and judges those reports again with the new data, as the daemon does
/// (see `run_daemon`). Files that take longer than [`ONE_OFF_PATIENCE`] to
/// settle, or that cannot be opened, are only reported: `reprocess` once
/// they are in place.
async fn judge_again_if_changed(
    config: &SyncConfig,
    store: &Store,
    sources: &mut SourceWatch,
    ids: Option<RawIdRange>,
) -> Result<(), Error> {
    let Some(ids) = ids else { return Ok(()) };
    let started = std::time::Instant::now();
    while !sources.due(std::time::Instant::now()) {
        if sources.as_loaded() {
            return Ok(());
        }
        if started.elapsed() > ONE_OFF_PATIENCE {
            tracing::warn!(
                "the address data files changed while reports were judged and are still \
                 changing: run `reprocess` once they are in place"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let pipeline = match pipeline(config, store).await {
        Ok(pipeline) => pipeline,
        Err(e) => {
            tracing::warn!(error = %e,
                "the address data files changed while reports were judged, and cannot be \
                 opened: run `reprocess` once they are in place");
            return Ok(());
        }
    };
    tracing::info!("address data changed while reports were judged: judging them again with it");
    judge_with_new_data(config, store, &pipeline, ids).await?;
    save_resolver_cache(pipeline.chain(), store).await?;
    Ok(())
}

/// The error of a pull in which the collectors listed (name, what went
/// wrong) failed; none when all answered. A single failure is said once,
/// under its collector's name.
fn collector_failure(failed: &[(&str, &str)]) -> Option<Error> {
    match failed {
        [] => None,
        [(name, message)] => Some(Error::Collector {
            name: (*name).to_owned(),
            message: (*message).to_owned(),
        }),
        several => Some(Error::Collector {
            name: several
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            message: several
                .iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Each collector pulled on its own schedule and the pipeline run on what
/// was committed, until Ctrl-C or SIGTERM; with `serve`, also the back
/// office when `backoffice.enabled`.
async fn daemon(
    config: &SyncConfig,
    store: &Store,
    process: bool,
    serve: bool,
) -> Result<(), Error> {
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let result = run_daemon(config, store, process, serve, shutdown).await;
    signals.abort();
    result
}

/// The daemon until `shutdown` is cancelled. The puller runs on a task of
/// its own, every collector on its own schedule (see [`Puller::run`]), so a
/// collector that is down or slow delays only itself. The pipeline runs on
/// this task: at start, after any commit that stored new reports, and at
/// least every interval; it never waits for a pull round to end. Every task
/// started here is stopped and awaited before this returns.
async fn run_daemon(
    config: &SyncConfig,
    store: &Store,
    process: bool,
    serve: bool,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let puller = puller(config)?;
    let mut sources = source_watch(config);
    let mut pipeline = if process {
        Some(pipeline(config, store).await?)
    } else {
        None
    };
    let reports = ReportScheduler::from_config(config)?;
    let interval = std::time::Duration::from_secs(config.pull.interval_s);
    tracing::info!(
        collectors = config.collectors.len(),
        interval_s = config.pull.interval_s,
        database = store.backend_name(),
        "lineprobe-sync running"
    );
    let backoffice = (config.backoffice.enabled && serve).then(|| {
        let (config, store, shutdown) = (config.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_backoffice(&config, store, shutdown.clone()).await {
                tracing::error!(error = %e, "the back office stopped; the daemon goes on");
            }
        })
    });
    // One pending wake-up at most: commits while the pipeline runs are
    // all picked up by its next run.
    let (committed, mut wake) = mpsc::channel(1);
    let mut pulling = tokio::spawn({
        let sink = WakeOnCommit {
            store: store.clone(),
            committed,
        };
        let shutdown = shutdown.clone();
        async move { puller.run(&sink, interval, shutdown).await }
    });
    // The puller returns before shutdown only when there is no collector
    // to pull (the pipeline and the back office go on), or by panicking.
    let mut puller_returned = false;
    // The reports judged since the data files were last seen as loaded: if
    // the files changed meanwhile, some were judged with data the files no
    // longer hold (even by a run that began before the change), and once
    // the new data is loaded they are judged again with it. Without this a
    // run under way when the files changed (and the runs while the change
    // settled) kept their verdicts from the old data: `reprocess`, started
    // after the change, may already have passed them.
    let mut judged_unsure: Option<RawIdRange> = None;
    let mut judge_again: Option<RawIdRange> = None;
    let outcome = loop {
        if let Some(current) = &mut pipeline {
            if reload_sources(config, store, current, &mut sources).await {
                judge_again = RawIdRange::join(judge_again, judged_unsure.take());
            } else if sources.as_loaded() {
                judged_unsure = None;
            }
            if let Some(ids) = judge_again {
                match judge_with_new_data(config, store, current, ids).await {
                    Ok(()) => judge_again = None,
                    Err(e) => tracing::error!(error = %e,
                        "reports judged while the address data changed could not be judged \
                         again with the new data; trying again on the next run"),
                }
            }
            let ids = process_pending(config, store, current, reports.as_ref()).await;
            judged_unsure = RawIdRange::join(judged_unsure, ids);
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            ended = &mut pulling, if !puller_returned => match ended {
                Ok(()) => puller_returned = true,
                Err(e) => break Err(Error::Internal(format!("the puller failed: {e}"))),
            },
            Some(()) = wake.recv() => {}
            () = tokio::time::sleep(interval) => {}
        }
    };
    // Stops the puller (and the back office) when the loop ended on a
    // failure rather than on a signal.
    shutdown.cancel();
    let outcome = match (outcome, puller_returned) {
        (Err(e), _) => Err(e),
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => pulling
            .await
            .map_err(|e| Error::Internal(format!("the puller failed while stopping: {e}"))),
    };
    if let Some(backoffice) = backoffice {
        let _ = backoffice.await;
    }
    tracing::info!("lineprobe-sync stopped");
    outcome
}

/// Judges the processed reports with ids in `ids` again with the data now
/// loaded (see `run_daemon`).
async fn judge_with_new_data(
    config: &SyncConfig,
    store: &Store,
    pipeline: &Pipeline,
    ids: RawIdRange,
) -> Result<(), Error> {
    let run = pipeline
        .reprocess_ids(store, ids, config.pipeline.batch, log_progress)
        .await?;
    tracing::info!(
        read = run.read,
        verdicts_new = run.applied.verdicts_new,
        lines_changed = run.applied.lines_changed,
        kept = run.deferred,
        "reports judged while the address data changed, judged again with the new data"
    );
    Ok(())
}

/// Opens the address sources again when their data files changed (and
/// settled), so that new reports are judged with the new data; the
/// sources in use stay when the new files cannot be opened. Reports judged
/// before are judged again only by `reprocess` (but see `run_daemon` for
/// those judged while the files changed). True when the sources were
/// opened again.
async fn reload_sources(
    config: &SyncConfig,
    store: &Store,
    current: &mut Pipeline,
    sources: &mut SourceWatch,
) -> bool {
    if !sources.due(std::time::Instant::now()) {
        return false;
    }
    // The lookup services' answers so far, kept for the new sources.
    if let Err(e) = save_resolver_cache(current.chain(), store).await {
        tracing::warn!(error = %e, "resolver cache not saved");
    }
    // Only the files decide whether the new sources can be opened: when
    // they cannot, they are tried again once they change. The database
    // (the lookup services' cached answers) can fail for a moment, so the
    // reload is then tried again on the next run, files unchanged.
    let reloaded = match open_pipeline(config) {
        Ok(reloaded) => reloaded,
        Err(e) => {
            sources.reload_failed();
            tracing::warn!(error = %e,
                "address data changed but cannot be opened; judging with the data in use until \
                 the files change again");
            return false;
        }
    };
    if let Err(e) = load_caches(&reloaded, store).await {
        tracing::warn!(error = %e,
            "address data changed, but the resolver cache cannot be read for the new sources; \
             judging with the data in use, and trying again on the next run");
        return false;
    }
    sources.reloaded();
    *current = reloaded;
    let versions: Vec<String> = current
        .chain()
        .sources()
        .iter()
        .map(|s| format!("{} {}", s.name(), s.data_version()))
        .collect();
    tracing::info!(
        versions = %versions.join(", "),
        "address data changed: sources opened again; new reports are judged with it \
         (run `reprocess` for reports judged before)"
    );
    true
}

/// One run of the pipeline over the pending reports, the resolver cache
/// saved, then any scheduled batch report that is due. A failure is logged
/// and retried on the next run; the reports stay pending. Returns the ids
/// of the raw reports the run read (those of the batches it applied, when
/// it failed).
async fn process_pending(
    config: &SyncConfig,
    store: &Store,
    pipeline: &Pipeline,
    reports: Option<&ReportScheduler>,
) -> Option<RawIdRange> {
    // Progress is told after every batch applied and at the end.
    let mut ids = None;
    let progress = |run: &PipelineRun| {
        ids = run.raw_ids;
        log_progress(run);
    };
    let outcome = pipeline
        .run_pending(store, config.pipeline.batch, progress)
        .await;
    let resolved = match outcome {
        Ok(run) if run.read == 0 => false,
        Ok(run) => {
            tracing::info!(
                read = run.read,
                quarantined = run.applied.quarantined,
                new = run.applied.observations_new,
                verdicts = run.applied.verdicts_new,
                // Left pending: an address source failed for them.
                deferred = run.deferred,
                "processed"
            );
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "pipeline failed");
            true
        }
    };
    // Only a run that read reports can have asked a lookup service.
    if resolved && let Err(e) = save_resolver_cache(pipeline.chain(), store).await {
        tracing::warn!(error = %e, "resolver cache not saved");
    }
    // After the pipeline, so a report counts what was just processed.
    if let Some(reports) = reports {
        reports.tick(store).await;
    }
    ids
}

/// The daemon's sink: the internal database, and a wake-up for the
/// pipeline after every commit that stored new reports.
struct WakeOnCommit {
    store: Store,
    committed: mpsc::Sender<()>,
}

impl PullSink for WakeOnCommit {
    async fn cursor(&self, collector: &str) -> Result<Option<(String, u64)>, Error> {
        PullSink::cursor(&self.store, collector).await
    }

    async fn commit(
        &self,
        collector: &str,
        node_id: &str,
        reports: &[PulledLine],
        next_after: u64,
    ) -> Result<u64, Error> {
        let inserted =
            PullSink::commit(&self.store, collector, node_id, reports, next_after).await?;
        if inserted > 0 {
            // Full: a wake-up is already pending. Closed: the daemon is
            // stopping.
            let _ = self.committed.try_send(());
        }
        Ok(inserted)
    }

    async fn store(&self, collector: &str) -> Result<Option<String>, Error> {
        PullSink::store(&self.store, collector).await
    }

    async fn bind_store(&self, collector: &str, store_id: &str) -> Result<(), Error> {
        PullSink::bind_store(&self.store, collector, store_id).await
    }

    async fn acked(&self, collector: &str, up_to: u64) -> Result<(), Error> {
        PullSink::acked(&self.store, collector, up_to).await
    }

    async fn caught_up(&self, collector: &str, round_started_ms: i64) -> Result<(), Error> {
        PullSink::caught_up(&self.store, collector, round_started_ms).await
    }

    async fn failed(&self, collector: &str, message: &str) -> Result<(), Error> {
        PullSink::failed(&self.store, collector, message).await
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            shutdown.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}

fn log_progress(run: &PipelineRun) {
    tracing::debug!(
        read = run.read,
        elapsed_ms = run.elapsed_ms,
        "pipeline progress"
    );
}

fn print_run(run: &PipelineRun) {
    tracing::info!(
        read = run.read,
        quarantined = run.applied.quarantined,
        observations_new = run.applied.observations_new,
        repeated = run.applied.observations_repeated,
        verdicts_new = run.applied.verdicts_new,
        lines_changed = run.applied.lines_changed,
        deferred = run.deferred,
        rejudged = run.rejudged,
        elapsed_ms = run.elapsed_ms,
        "pipeline done"
    );
}

/// The UTC offset a day named on the command line is taken in: the
/// reports' (`report.utc_offset`, China's +08:00 by default), so that
/// `--since 2026-11-21` starts where the day report of 2026-11-21 and the
/// back office's date filter start, not eight hours later at midnight UTC.
fn day_offset(config: &SyncConfig) -> Result<chrono::FixedOffset, Error> {
    config.report.offset().map_err(|reason| Error::Config {
        key: "report.utc_offset".to_owned(),
        reason,
    })
}

/// A day (`2026-11-01`, its midnight in `offset`) or an RFC 3339 time, as
/// Unix ms.
fn parse_since(s: &str, offset: chrono::FixedOffset) -> Result<i64, Error> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| crate::Period::day_start(d, offset).timestamp_millis())
        .ok_or_else(|| Error::Config {
            key: "--since".to_owned(),
            reason: format!("{s:?} is not a date: write YYYY-MM-DD or an RFC 3339 time"),
        })
}

fn normalise_province(catalog: &lineprobe_shared::Catalog, s: &str) -> Result<String, Error> {
    catalog
        .province(s)
        .map(|p| p.id.as_str().to_owned())
        .ok_or_else(|| Error::Config {
            key: "--province".to_owned(),
            reason: format!(
                "{s:?} is not a province; use one of {}",
                catalog.province_choices()
            ),
        })
}

/// The carrier id `s` names; an error naming `flag` (`--carrier` or
/// `--actual-carrier`: the one to fix) when it names none.
fn normalise_carrier(
    catalog: &lineprobe_shared::Catalog,
    flag: &str,
    s: &str,
) -> Result<String, Error> {
    catalog
        .carrier(s)
        .map(|c| c.id.as_str().to_owned())
        .ok_or_else(|| Error::Config {
            key: flag.to_owned(),
            reason: format!(
                "{s:?} is not a carrier; use one of {}",
                catalog.carrier_choices()
            ),
        })
}

fn check_verdict(s: &str) -> Result<String, Error> {
    const VERDICTS: [&str; 5] = [
        "compliant",
        "non_compliant",
        "violating_ip",
        "proxy_suspected",
        "indeterminate",
    ];
    if VERDICTS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(Error::Config {
            key: "--verdict".to_owned(),
            reason: format!("{s:?} is not a verdict; use one of {}", VERDICTS.join(", ")),
        })
    }
}

/// Parses `args`, runs, and turns the outcome into an exit code with the
/// error on stderr: what the binary's `main` calls.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    // Warnings and the sync crate's own progress unless RUST_LOG says otherwise.
    lineprobe_shared::log_to_stderr("warn,lineprobe_sync=info");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut std::io::stdin().lock(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not a failure of ours.
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-sync: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(args: &[&str]) -> Result<LineFilter, Error> {
        let mut all = vec!["lineprobe-sync", "verdicts"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| Error::Internal(e.to_string()))?;
        let cst = chrono::FixedOffset::east_opt(8 * 3600).ok_or(Error::Internal(String::new()))?;
        verdict_filter(&lineprobe_shared::Catalog::embedded()?, cst, &cli.command)
    }

    #[test]
    fn a_city_name_is_looked_up_within_the_province_asked_for() {
        // 朝阳 is a district of Beijing and a city of Liaoning; Suzhou a
        // city of Jiangsu and one of Anhui.
        let f = filter(&["--province", "辽宁", "--city", "朝阳"]).unwrap();
        assert_eq!(f.province.as_deref(), Some("CN-LN"));
        assert_eq!(f.city.as_deref(), Some("211300"));
        let f = filter(&["--province", "CN-JS", "--city", "Suzhou"]).unwrap();
        assert_eq!(f.city.as_deref(), Some("320500"));
        let f = filter(&["--province", "安徽", "--city", "Suzhou"]).unwrap();
        assert_eq!(f.city.as_deref(), Some("341300"));
        // A name only one province has needs no province.
        let f = filter(&["--city", "深圳"]).unwrap();
        assert_eq!(f.city.as_deref(), Some("440300"));
    }

    #[test]
    fn a_day_starts_at_its_midnight_in_the_reports_offset() {
        // China Standard Time: 2026-11-21 starts at 16:00 UTC the day
        // before, as the day report of 2026-11-21 does.
        let f = filter(&["--since", "2026-11-21"]).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-21T00:00:00+08:00").unwrap();
        assert_eq!(f.seen_since_ms, Some(start.timestamp_millis()));
        // A time says its own offset.
        let f = filter(&["--since", "2026-11-21T00:00:00Z"]).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z").unwrap();
        assert_eq!(f.seen_since_ms, Some(start.timestamp_millis()));
    }

    #[test]
    fn a_bad_filter_names_its_own_flag() {
        for (args, flag) in [
            (["--actual-carrier", "nope"], "--actual-carrier"),
            (["--carrier", "nope"], "--carrier"),
            (["--verdict", "guilty"], "--verdict"),
            (["--trust", "lowest"], "--trust"),
            (["--since", "2026-02-30"], "--since"),
            (["--city", " "], "--city"),
            (["--province", ""], "--province"),
        ] {
            let err = filter(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
            let Error::Config { key, .. } = &err else {
                panic!("{args:?}: {err}");
            };
            assert_eq!(key, flag, "{args:?}: {err}");
        }
    }
}
