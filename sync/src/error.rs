/// The error type of `lineprobe-sync`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key holds something that cannot be used.
    #[error("configuration {key}: {reason}")]
    Config {
        /// The key (`database.url`) or the file.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A failure inside the program itself (a worker thread that died).
    #[error("internal error: {0}")]
    Internal(String),
    /// The demo could not run.
    #[error("demo: {0}")]
    Demo(String),
    /// Reading the input failed.
    #[error("cannot read {what}: {source}")]
    Input {
        /// The file, or "standard input".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// An error from the shared layer: an unrecognized trace, a bad catalog…
    #[error(transparent)]
    Shared(#[from] lineprobe_shared::Error),
    /// An address data source (address plan, range table, configuration)
    /// holds something that cannot be used; `what` names the file and line.
    #[error("{what}: {message}")]
    SourceData {
        /// The file, with `:line` when one line is at fault.
        what: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A MaxMind-format database cannot be opened or read.
    #[error("MaxMind-format database {what}: {source}")]
    Mmdb {
        /// The file.
        what: String,
        /// The underlying error.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// A `[[collector]]` entry cannot be used as configured.
    #[error("collector {name:?}: {message}")]
    CollectorConfig {
        /// The collector's configured name (or its position).
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Pulling from or acknowledging to a collector failed.
    #[error("collector {name:?}: {message}")]
    Collector {
        /// The collector's configured name.
        name: String,
        /// What went wrong, and what to check.
        message: String,
    },
    /// A lookup service (the `http` source) could not answer for an
    /// address: it timed out, answered with an error status or with JSON the
    /// field mapping does not fit, or the rate limit left no slot in time.
    #[error("address source `{source_name}` could not look up {ip}: {message}")]
    Lookup {
        /// The source's configured name.
        source_name: String,
        /// The address looked up.
        ip: std::net::IpAddr,
        /// What failed and, where the operator can act, how to fix it.
        message: String,
    },
    /// The database URL names no database the store can open.
    #[error("database URL `{url}` {reason}")]
    BadDatabaseUrl {
        /// The URL, its password (if any) masked.
        url: String,
        /// What is wrong, and the forms that work.
        reason: String,
    },
    /// A listing or report of what was pulled (`verdicts`, `quarantine`,
    /// `report`) named an SQLite file that does not exist: a mistyped path,
    /// which would otherwise be created empty and answer with nothing.
    #[error(
        "no database at {}: check --database (or database.url and data_dir in the \
         configuration); `lineprobe-sync pull` or `run` creates it",
        path.display()
    )]
    NoDatabase {
        /// The SQLite file.
        path: std::path::PathBuf,
    },
    /// The directory of an SQLite database cannot be created.
    #[error(
        "cannot create the directory {} for the SQLite database: {source}; \
         check the path and its permissions",
        path.display()
    )]
    DatabaseDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed; `context` says what was being done and
    /// in which database.
    #[error("{context}: {}", database_cause(source))]
    Database {
        /// What was being done, and where.
        context: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// The database schema cannot be brought up to date.
    #[error(
        "cannot bring the schema of the {target} up to date: {}; if another version of \
         lineprobe-sync wrote this database, run that version or point this one at a new database",
        migrate_cause(source)
    )]
    Migrate {
        /// The database.
        target: String,
        /// The underlying error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A collector now answers with another node id than its pull cursor
    /// belongs to: it was replaced and numbers its reports afresh.
    #[error(
        "collector `{collector}` now answers as node `{new_node}`, but its pull cursor belongs \
         to node `{old_node}`: a replaced collector numbers its reports afresh, so configure it \
         under a new collector name (the old cursor and the reports pulled under it are kept)"
    )]
    CollectorReplaced {
        /// The collector's configured name.
        collector: String,
        /// The node the cursor belongs to.
        old_node: String,
        /// The node that answered.
        new_node: String,
    },
    /// A collector answers from another staging store than its pulls came
    /// from: its store was made afresh (lost, replaced, restored), and it
    /// numbers its reports from the start again under the same node id.
    #[error(
        "collector `{collector}` (node `{node}`) now answers from another staging store than \
         the one pulled so far: its store was made afresh, and it numbers its reports from the \
         start again, so they would be taken for reports already pulled and acknowledged \
         without being stored. Give the collector a new node_id in its configuration and \
         configure it here under a new collector name (the old cursor and the reports pulled \
         under it are kept); nothing was stored or acknowledged"
    )]
    CollectorStoreReplaced {
        /// The collector's configured name.
        collector: String,
        /// The node it answers as.
        node: String,
    },
    /// A collector answers as a node whose reports are pulled under another
    /// collector's name.
    #[error(
        "collector `{collector}` answers as node `{node}`, which is pulled as collector \
         `{other}`: two collectors answering as one node number their reports alike, so one's \
         reports would be taken for the other's and acknowledged without being stored. Give \
         each collector its own node_id in its configuration (if `{collector}` is `{other}` \
         renamed, keep the name `{other}`); nothing was stored"
    )]
    NodeShared {
        /// The collector being pulled.
        collector: String,
        /// The node it answered as.
        node: String,
        /// The collector whose cursor belongs to that node.
        other: String,
    },
    /// A report file or the report folder cannot be written or read.
    #[error(
        "cannot write the report file {}: {source}; check that the folder can be created and \
         written (report.out_dir, or --out)",
        path.display()
    )]
    ReportFile {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store was handed something it cannot keep (a sequence number
    /// beyond the database's range, a result for an unknown report…).
    #[error("{0}")]
    StoreInput(String),
    /// A back-office account cannot be created or changed as asked (the
    /// name is taken, there is no such user, the password is too short…).
    #[error("{0}")]
    UserAccount(String),
    /// The back office cannot serve: its address is taken, its certificate
    /// cannot be read, its manifest key is unusable.
    #[error("back office: {0}")]
    Backoffice(String),
}

impl Error {
    /// The process exit code for this error: 2 for bad input or usage (the
    /// caller can fix it), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input { .. }
            | Self::Config { .. }
            | Self::Shared(_)
            | Self::SourceData { .. }
            | Self::Mmdb { .. }
            | Self::CollectorConfig { .. }
            | Self::BadDatabaseUrl { .. }
            | Self::NoDatabase { .. }
            | Self::CollectorReplaced { .. }
            | Self::NodeShared { .. }
            | Self::CollectorStoreReplaced { .. }
            | Self::UserAccount(_) => 2,
            Self::Output(_)
            | Self::Collector { .. }
            | Self::Lookup { .. }
            | Self::DatabaseDir { .. }
            | Self::ReportFile { .. }
            | Self::Database { .. }
            | Self::Migrate { .. }
            | Self::StoreInput(_)
            | Self::Internal(_)
            | Self::Demo(_)
            | Self::Backoffice(_) => 1,
        }
    }
}

/// What went wrong in the database, for a person: the server's own message,
/// with PostgreSQL's detail and hint when it gives them, instead of sqlx's
/// rendering, which ends with the line of the server's C source that raised
/// it (`role "x" does not exist at line 768`).
fn database_cause(source: &sqlx::Error) -> String {
    let Some(db) = source.as_database_error() else {
        return source.to_string();
    };
    let mut text = format!("the database answered: {}", db.message());
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            text.push_str("; ");
            text.push_str(detail);
        }
        if let Some(hint) = pg.hint() {
            text.push_str(" (hint: ");
            text.push_str(hint);
            text.push(')');
        }
    }
    text
}

/// A migration failure, its database error told as [`database_cause`] tells
/// one.
fn migrate_cause(source: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match source {
        MigrateError::Execute(e) => format!("while executing migrations: {}", database_cause(e)),
        MigrateError::ExecuteMigration(e, version) => {
            format!("while executing migration {version}: {}", database_cause(e))
        }
        other => other.to_string(),
    }
}

impl From<lineprobe_shared::EnvOverrideError> for Error {
    fn from(e: lineprobe_shared::EnvOverrideError) -> Self {
        Self::Config {
            key: e.key,
            reason: e.reason,
        }
    }
}
