//! End-to-end tests: `influx-ha serve` in front of real InfluxDB 1.6 processes. One test binary
//! (one link step); the tests take a lock and run one at a time, since each starts several
//! processes on a 2-core machine.

mod admin;
mod bench;
mod compat;
mod faults;
mod listeners;
mod netdata;
mod protocols;
mod proxy;
mod query;
mod relay;
mod repair;
mod replication;
mod security;
mod support;
mod topology;
