//! pulse-core
