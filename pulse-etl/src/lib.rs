//! pulse-etl
