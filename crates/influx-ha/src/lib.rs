//! influx-ha: high availability for InfluxDB OSS.
#![forbid(unsafe_code)]

pub mod config;
pub mod go_json;
pub mod params;
pub mod units;
