//! Integration tests: a real gateway between a real client, a real
//! loopback upstream and a real loopback issuer.

#![allow(clippy::unwrap_used)]

mod config;
mod deploy;
mod introspection;
mod jwks;
mod jwt;
mod ops;
mod process;
mod proxy;
mod revocation;
mod support;
