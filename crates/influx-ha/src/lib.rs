//! influx-ha: high availability for InfluxDB OSS.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod config;
pub mod go_json;
pub mod health;
pub mod http;
pub mod node;
pub mod params;
pub mod server;
pub mod shutdown;
pub mod units;
