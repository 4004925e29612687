//! Replicas that heal: `influx-ha verify` finds what differs between the backends, `influx-ha
//! repair` copies back only that (DESIGN.md §6).
//!
//! Queues keep what a backend missed while it was away, but not everything can be queued (a
//! queue past `max_bytes` or `max_age`, a corrupt record, dead letters, a replaced disk, a new
//! backend). Those backends are marked *diverged* (`data_dir/NAME/diverged`) and serve no
//! reads; verify and repair bring them back:
//!
//! - [`verify`](mod@verify): schema, then `count(*)` per measurement and shard-group window,
//!   then per series and sixteenth of the windows that differ. Talks to the backends directly
//!   with their service credentials, paced ([`conn::Pacer`]) and counted ([`conn::Traffic`]).
//! - [`copy`]: copies each differing piece from the most complete backend, rebuilt into line
//!   protocol by [`rebuild`] (field types from `SHOW FIELD KEYS`); idempotent, so a stopped
//!   repair is simply run again.
//! - [`flag`]: clears the diverged flag when a full verify finds no difference (admin API of
//!   the running node, or the file of a stopped one).
//! - [`background`]: the same, at intervals over the recent past, inside the node
//!   (`[anti_entropy]`).
//! - [`command`]: the two subcommands; [`progress`]: the progress bar; [`timespec`]:
//!   `--since`/`--until` and times in the report; [`influxql`]: quoting and answers.

pub mod background;
pub mod command;
pub mod conn;
pub mod copy;
pub mod flag;
pub mod influxql;
pub mod progress;
pub mod rebuild;
pub mod timespec;
pub mod verify;

use crate::backend::{SendError, SetupError};

pub use self::copy::{RepairOptions, RepairOutcome, repair};
pub use self::verify::{Report, Scope, verify};

/// Why verify or repair stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A backend could not be reached or did not answer in time.
    #[error("backend {backend}: {query}: {source}")]
    Send {
        /// The backend.
        backend: String,
        /// The statement (shortened).
        query: String,
        /// What went wrong.
        #[source]
        source: SendError,
    },
    /// A backend answered a query with an error.
    #[error("backend {backend}: {query}: {message}")]
    Query {
        /// The backend.
        backend: String,
        /// The statement (shortened).
        query: String,
        /// InfluxDB's error, or why the answer could not be read.
        message: String,
    },
    /// Points read from a backend could not be turned back into line protocol.
    #[error("backend {backend}: series {series}: {source}")]
    Rebuild {
        /// The backend read from.
        backend: String,
        /// The series key.
        series: String,
        /// What is wrong with the row.
        #[source]
        source: rebuild::RebuildError,
    },
    /// A backend refused copied points.
    #[error("backend {backend}: write to {db}.{rp} refused: {message}")]
    Write {
        /// The backend written to.
        backend: String,
        /// Database.
        db: String,
        /// Retention policy.
        rp: String,
        /// Its answer.
        message: String,
    },
    /// The diverged flag could not be cleared.
    #[error("backend {backend}: diverged flag not cleared: {message}")]
    Flag {
        /// The backend.
        backend: String,
        /// Why.
        message: String,
    },
    /// A backend client could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A command-line value is not valid.
    #[error("{0}")]
    Usage(String),
}

#[cfg(test)]
mod tests;
