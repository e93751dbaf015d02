//! Pulse facade.
