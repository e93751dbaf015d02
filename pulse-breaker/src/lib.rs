//! pulse-breaker
