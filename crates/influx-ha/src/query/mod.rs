//! The read path (DESIGN.md §5): `/query`, `/api/v2/query` and `/api/v1/prom/read`, answered
//! by the InfluxDB backends through the [`crate::http::Handler`] seam.
//!
//! - [`params`]: the request's parameters as 1.6 reads them (query string, form body,
//!   multipart file `q`), re-encoded for a backend without the client's `u` and `p`.
//! - [`classify`]: statements split and classified; the most demanding one decides the route.
//! - [`route`]: where a query goes and how its answer comes back:
//!   - reads → one *fresh* backend (up, not diverged, not in maintenance, no queued writes for
//!     it here or on any peer), least outstanding requests first; a connection error, a
//!     timeout or a 5xx before the answer reached the client moves on to the next one. No
//!     fresh backend: 503 with the reasons, or with `[query] stale_reads` a reachable one and
//!     the header `X-Influx-Ha-Stale: true`.
//!   - `SELECT … INTO`, `CREATE`, `DROP`, `ALTER`, `DELETE` → every backend; a backend that is
//!     down, or has writes queued, gets the statement queued in order with those writes (so
//!     a returning backend creates a database before the writes that need it). The client
//!     gets the answer of the first backend (config order) that executed it.
//!   - user management → every backend directly, never queued (it may carry a password);
//!     refused with 503 naming the backends that are down, before anything is sent.
//!   - `KILL QUERY n ON "<backend>"` → that backend (query ids are per backend; with a single
//!     backend `ON` may be left out). `SHOW QUERIES` is a read: it lists the queries of the
//!     backend named in the `X-Influx-Ha-Backend` response header, which every answer carries.
//! - [`stream`]: answers stream through (chunked stays chunked, gzip stays gzip); only their
//!   first 64 KiB are held back briefly, so memory does not grow with the result.
//!
//! `Accept` (JSON, CSV, msgpack) and `Accept-Encoding` go to the backend as sent; the answer's
//! `Content-Type`, `Content-Encoding` and `X-Influxdb-Error` come back with InfluxDB's common
//! headers and this request's id (which the backend also gets as `X-Request-Id`).

pub mod classify;
pub mod params;
pub mod route;
pub mod stream;

pub use self::route::QueryService;
