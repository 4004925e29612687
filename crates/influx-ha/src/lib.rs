//! influx-ha: high availability for InfluxDB OSS.
