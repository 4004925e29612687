//! InfluxDB 1.6 line protocol, validated exactly as InfluxDB 1.6.7's parser does, fast.
//!
//! API (stable; the implementation is being written):
//!
//! ```ignore
//! let v = lineproto::validate(body, Precision::from_v1_param("ms"), now_unix_nanos);
//! v.points();          // number of valid points that will be forwarded
//! v.rejected();        // &[Rejected]: every refused line, in body order, with its reason
//! v.output();          // bytes to forward: valid lines, '\n'-terminated, missing timestamps stamped
//! v.is_unchanged();    // true when output() is the body itself (nothing refused, nothing stamped)
//! v.influx_error();    // Option<String>: the exact error text InfluxDB 1.6 answers (status 400)
//!                      // when the forwarded points are all stored; None means 204
//! ```
#![forbid(unsafe_code)]

mod precision;
pub use precision::{InvalidPrecision, Precision};
