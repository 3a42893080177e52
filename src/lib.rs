//! authgate: a TLS-terminating reverse proxy that authenticates every
//! request before it reaches the upstream. The request path:
//!
//! 1. `server` accepts and serves connections (TLS, HTTP/1.1 + HTTP/2, limits, timeouts);
//! 2. `gateway::Gateway::handle` normalises the path and host, and `routing` picks the route;
//! 3. `auth` extracts the bearer token, verifies it against `jwks` keys, applies the policy;
//! 4. `proxy::headers` rewrites headers (identity in, spoofed identity out);
//! 5. `proxy::forward` streams the request to the upstream and the answer back;
//!
//! every refusal on the way is rendered by `response`. The README's
//! *Architecture* section has the map. Modules stay `pub` only where the
//! binary, benches, fuzz targets or integration tests use them.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub(crate) mod decisions;
pub mod demo;
pub(crate) mod descriptors;
pub(crate) mod dpop_tool;
pub mod gateway;
pub mod huge_pages;
pub mod jwks;
pub mod proxy;
pub(crate) mod response;
pub mod revocation;
pub mod routing;
pub(crate) mod runtime;
pub mod server;
pub mod telemetry;
pub mod tls;
