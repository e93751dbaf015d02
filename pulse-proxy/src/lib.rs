//! pulse-proxy
