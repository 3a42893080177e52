//! Integration tests: a real gateway between a real client, a real
//! loopback upstream and a real loopback issuer.

#![allow(clippy::unwrap_used)]

mod api_keys;
mod browser;
mod config;
mod decisions;
mod deploy;
mod docs;
mod dpop;
mod edge;
mod fuzz_corpus;
mod grpc;
mod hostile;
mod interop;
mod introspection;
mod jwks;
mod jwt;
mod keepalive;
mod limits;
mod ops;
mod phantom;
mod pool;
mod process;
mod properties;
mod proxy;
mod reload;
mod revocation;
mod support;
mod timeouts;
mod tls;
