//! Tessera's storage and sealing.
pub mod seal;
