//! influx-ha: high availability for InfluxDB OSS.
//!
//! One process per node, in front of InfluxDB 1.x backends: clients write to it exactly as they
//! would to InfluxDB 1.6 (same endpoints, status codes, headers and error texts); each write is
//! replicated to every backend, and acknowledged only once it is durable (on the backends or
//! in per-backend hinted-handoff queues). See `DESIGN.md` for the promises and the answer
//! table, and `influx-ha --help` for the commands.
//!
//! # Layout
//!
//! Foundation:
//!
//! - [`config`]: the TOML schema, defaults and validation (errors name line and key);
//!   [`units`] parses `"10GiB"` / `"7d"`; [`params`] holds consistency levels and precisions.
//! - [`http`]: the InfluxDB-compatible surface shared by every listener: routing,
//!   [`http::compat`] (headers, request ids), [`http::error`] (every failure mapped to status
//!   and text in one place), [`http::body`] (size, time and in-flight caps, gzip through
//!   [`http::gzip`]), [`http::query`] (Go's query-string rules). [`go_json`] writes JSON
//!   strings byte-for-byte as Go does.
//! - [`server`]: accept loop with connection backpressure, per-connection tasks, drain;
//!   [`shutdown`]: the broadcast-based shutdown signal; [`health`]: readiness behind `/health`.
//! - [`backend`]: one pooled client per InfluxDB backend (timeouts, service credentials) and
//!   the single classification of its answers ([`backend::classify`]).
//! - [`auth`]: relay-level users and tokens (hashed), checked as InfluxDB 1.6 checks its own,
//!   through [`http::guard`] before every endpoint that does work.
//! - [`node`]: wires config, listeners, backends and SIGTERM together (`influx-ha serve`);
//!   [`cli`]: the command line and what `influx-ha check` prints.
//!
//! Where the paths live:
//!
//! - **Write path**: `POST /write` (and 1.8's `POST /api/v2/write`) → [`http::HttpService`]
//!   checks parameters and reads the body ([`http::body::read_body`]) → the
//!   [`http::WriteHandler`] seam → [`write`](mod@write): `lineproto` validation, fan-out to
//!   every backend over [`backend::BackendClient::write`], consistency levels and the answer
//!   table, the `handoff` queues under `data_dir/<backend>/` and their replay. The UDP and TCP
//!   line-protocol listeners and the Graphite, OpenTSDB and Prometheus remote-write
//!   conversions ([`ingest`]) feed the same replicator.
//! - **Backend state**: [`state`] holds every backend's reachability, queue depth, divergence
//!   and peer reports as one lock-free snapshot ([`state::StateBoard`]).
//! - **Read path** ([`query`]): `/query` (and `/api/v2/query`, `/api/v1/prom/read`) plugged
//!   into the [`http::Handler`] seam: [`query::classify`] splits and classifies statements,
//!   [`query::route`] sends reads to one fresh backend (failing over before the answer
//!   reached the client) and state-changing statements to every backend (queued in order
//!   with the writes for one that cannot take them), [`query::stream`] streams answers.
//!   [`monitor`] is the one task that keeps the [`state::StateBoard`] current (health checks
//!   with rise/fall, passive marks, queue depths, divergence, peer reports); [`peers`] holds
//!   the queue report relays exchange (`/admin/v1/queues`) so that reads stay fresh across
//!   relays.
//! - **Admin surface** ([`admin`]): status page, `/status`, `/metrics`, admin API on the
//!   `[admin]` listener ([`http::Surface::Admin`]) or on the main one, through the same seam;
//!   `/ping` and `/health` are served on both.
//! - **Healing** ([`repair`]): `influx-ha verify` and `influx-ha repair` compare the backends
//!   with aggregates and copy back only what differs; they clear the diverged flag.
//!
//! Tools: [`bench`](mod@bench) is `influx-ha bench`, the load generator and convergence check.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod go_json;
pub mod health;
pub mod http;
pub mod ingest;
pub mod monitor;
pub mod node;
pub mod params;
pub mod peers;
pub mod query;
pub mod repair;
pub mod server;
pub mod shutdown;
pub mod state;
#[cfg(test)]
pub(crate) mod test_http;
pub mod tls;
pub mod units;
pub mod write;
