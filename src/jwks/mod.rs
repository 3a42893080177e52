//! Issuer keys: JWKS documents fetched (`fetch`, `discovery`), parsed
//! (`keyset`) and cached per issuer (`cache`). Nothing here reads tokens.

pub(crate) mod cache;
pub mod discovery;
pub(crate) mod fetch;
pub(crate) mod jwk;
pub mod keyset;

pub use cache::{KeyCache, KeyError};
pub use keyset::{KeySet, VerifyKey};
