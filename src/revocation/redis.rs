//! `store: redis`: revocations shared by every replica and kept across
//! restarts. A write sets a key that expires with what it revokes and
//! publishes the revocation on one channel, in one script. Each replica
//! subscribes, then loads every key, then applies what it hears; while the
//! subscription is down its list may be incomplete, so it reports itself
//! unhealthy and `on_store_error` decides.
//!
//! Keys: `authgate:revoked:jti:{jti}` holds the token's `exp`;
//! `authgate:revoked:sub:["{issuer}","{sub}"]` holds `issued_before`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BoxFuture, DenyList, Revocation, Store, StoreError};
use crate::config::ConfigProblem;
use crate::telemetry::redact::{redact_in, redact_url as redact};

/// The channel every replica listens on.
pub const CHANNEL: &str = "authgate:revocations";
/// Prefix of every key authgate writes.
pub const KEY_PREFIX: &str = "authgate:revoked:";
const JTI_PREFIX: &str = "authgate:revoked:jti:";
const SUB_PREFIX: &str = "authgate:revoked:sub:";
/// One-time keys (DPoP proof `jti`s per `htu`), by digest.
const ONCE_PREFIX: &str = "authgate:once:";

/// Bound on connecting and on every command.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The subscription is pinged this often, so a silent Redis is noticed.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Pause between reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

/// Keeps the larger value (`issued_before`, or a token's `exp`) and the
/// later expiry (none beats any), publishes: one step. A later revocation
/// never shortens an earlier one.
const REVOKE_SCRIPT: &str = r"
local old = redis.call('GET', KEYS[1])
local value = ARGV[1]
local keep_until = ARGV[2]
if old then
  if tonumber(old) > tonumber(value) then value = old end
  local expires = redis.call('EXPIRETIME', KEYS[1])
  if expires == -1 then
    keep_until = ''
  elseif keep_until ~= '' and expires > tonumber(keep_until) then
    keep_until = tostring(expires)
  end
end
if keep_until == '' then
  redis.call('SET', KEYS[1], value)
else
  redis.call('SET', KEYS[1], value, 'EXAT', keep_until)
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
";

/// The Redis client for `url` (`redis://` or `rediss://`, TLS verified
/// against the system roots, which `SSL_CERT_FILE` overrides, plus
/// `ca_file`). `check` and `run` both parse the URL here. No message names
/// the URL's password.
pub fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, ConfigProblem> {
    let problem = |what: String| ConfigProblem {
        path: "revocation.redis_url".into(),
        problem: format!("{}: {what}", redact(url)),
        expected: "redis://HOST:PORT or rediss://HOST:PORT".into(),
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(problem("not a redis URL".into()));
    }
    let scrub = |e: redis::RedisError| redact_in(&e.to_string(), url);
    match ca_file {
        Some(path) if url.starts_with("rediss://") => {
            let extra = std::fs::read(path).map_err(|e| ConfigProblem {
                path: "revocation.ca_file".into(),
                problem: format!("cannot read {}: {e}", path.display()),
                expected: "a PEM CA certificate".into(),
            })?;
            // The redis crate takes a root store in place of the system's:
            // give it the system roots (SSL_CERT_FILE honoured) plus ours.
            let mut root_cert = system_roots_pem();
            root_cert.extend_from_slice(&extra);
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(|e| problem(scrub(e)))
        }
        _ => redis::Client::open(url).map_err(|e| problem(scrub(e))),
    }
}

/// The system's root certificates as PEM (`SSL_CERT_FILE` overrides them,
/// as rustls-native-certs reads it).
fn system_roots_pem() -> Vec<u8> {
    use base64::Engine;
    let mut pem = Vec::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

#[derive(Debug)]
struct Health {
    synced: AtomicBool,
    /// When the last synchronised subscription was lost (none while up, or
    /// before the first sync).
    lost_at: Mutex<Option<std::time::Instant>>,
    grace: Duration,
    problem: Mutex<Option<String>>,
}

impl Health {
    fn new(grace: Duration) -> Self {
        Self {
            synced: AtomicBool::new(false),
            lost_at: Mutex::new(None),
            grace,
            problem: Mutex::new(None),
        }
    }

    fn up(&self) {
        if !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!("revocation store synchronised");
        }
        *self.lost_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn down(&self, problem: String) {
        if self.synced.swap(false, Ordering::AcqRel) {
            tracing::warn!(%problem, "revocation store unreachable");
            *self.lost_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
    }

    /// Synchronised, or lost less than `grace` ago (the list is then at
    /// most that stale, and is reloaded whole on reconnect).
    fn healthy(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            || self
                .lost_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < self.grace)
    }
}

/// The Redis-backed store.
#[derive(Debug)]
pub struct RedisStore {
    client: redis::Client,
    writer: ConnectionManager,
    script: redis::Script,
    list: Arc<DenyList>,
    health: Arc<Health>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl RedisStore {
    /// A store at `url` (TLS trust extended by `ca_file`), healthy through
    /// subscription drops shorter than `grace`; connects lazily (the first
    /// write, or [`Store::start`]).
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        grace: Duration,
        list: Arc<DenyList>,
    ) -> Result<Self, ConfigProblem> {
        let problem = |e: redis::RedisError| ConfigProblem {
            path: "revocation.redis_url".into(),
            problem: format!(
                "cannot use {}: {}",
                redact(url),
                redact_in(&e.to_string(), url)
            ),
            expected: "redis://HOST:PORT".into(),
        };
        let client = client(url, ca_file)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let writer =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(problem)?;
        Ok(Self {
            client,
            writer,
            script: redis::Script::new(REVOKE_SCRIPT),
            list,
            health: Arc::new(Health::new(grace)),
            task: Mutex::new(None),
        })
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Store for RedisStore {
    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (key, value) = key_value(revocation);
            let until = revocation
                .until()
                .map(|u| u.to_string())
                .unwrap_or_default();
            let message = serde_json::to_string(revocation)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut conn = self.writer.clone();
            let mut invocation = self.script.key(key);
            invocation.key(CHANNEL).arg(value).arg(until).arg(message);
            let call = invocation.invoke_async::<i64>(&mut conn);
            match tokio::time::timeout(TIMEOUT * 2, call).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(StoreError::Unavailable(e.to_string())),
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "redis did not answer in time".into(),
                    ));
                }
            }
            // Enforced here at once, not only when our own message comes back.
            self.list.apply(revocation);
            Ok(())
        })
    }

    fn healthy(&self) -> bool {
        self.health.healthy()
    }

    fn first_use<'a>(
        &'a self,
        key: &'a [u8; 32],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<bool>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let mut set = redis::cmd("SET");
            set.arg(format!(
                "{ONCE_PREFIX}{}",
                crate::telemetry::redact::hex(key)
            ))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
            let call = set.query_async::<Option<String>>(&mut conn);
            match tokio::time::timeout(TIMEOUT * 2, call).await {
                Ok(Ok(answer)) => Ok(Some(answer.is_some())),
                Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                Err(_) => Err(StoreError::Unavailable(
                    "redis did not answer in time".into(),
                )),
            }
        })
    }

    fn problem(&self) -> Option<String> {
        self.health
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn start(&self) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_some() {
            return;
        }
        let (client, list, health) = (self.client.clone(), self.list.clone(), self.health.clone());
        let handle = tokio::spawn(async move {
            loop {
                let error = mirror(&client, &list, &health).await;
                health.down(error);
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
        });
        *task = Some(handle.abort_handle());
    }
}

/// Subscribes, loads every stored revocation, then applies each one
/// published, until the connection fails; returns why.
async fn mirror(client: &redis::Client, list: &DenyList, health: &Health) -> String {
    let result: Result<std::convert::Infallible, String> = async {
        let pubsub = timed(client.get_async_pubsub()).await?;
        let (mut sink, mut stream) = pubsub.split();
        timed(sink.subscribe(CHANNEL)).await?;
        let mut conn = timed(client.get_multiplexed_async_connection()).await?;
        let loaded = load(&mut conn, list).await?;
        tracing::debug!(loaded, "revocations loaded from redis");
        health.up();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err("subscription closed".into());
                    };
                    match serde_json::from_slice::<Revocation>(message.get_payload_bytes()) {
                        Ok(r) => list.apply(&r),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed message on {CHANNEL}"),
                    }
                }
                _ = ping.tick() => {
                    // In subscribed mode PING answers ["pong", ""]: any answer will do.
                    timed(sink.ping::<redis::Value>()).await?;
                }
            }
        }
    }
    .await;
    match result {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Applies every stored revocation to `list`; returns how many.
async fn load(
    conn: &mut redis::aio::MultiplexedConnection,
    list: &DenyList,
) -> Result<usize, String> {
    let keys: Vec<String> = {
        let iter = timed(conn.scan_match::<_, String>(format!("{KEY_PREFIX}*"))).await?;
        iter.filter_map(|k| async move { k.ok() }).collect().await
    };
    let mut loaded = 0;
    for chunk in keys.chunks(256) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.get(key).ttl(key);
        }
        let answers: Vec<(Option<String>, i64)> = timed(pipe.query_async(conn)).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (key, (value, ttl)) in chunk.iter().zip(answers) {
            let until = (ttl > 0).then_some(now + ttl);
            if let Some(r) = value.and_then(|v| from_key_value(key, &v, until)) {
                list.apply(&r);
                loaded += 1;
            }
        }
    }
    Ok(loaded)
}

/// The key a revocation is stored under, and its value.
fn key_value(revocation: &Revocation) -> (String, String) {
    match revocation {
        Revocation::Token { jti, expires_at } => {
            (format!("{JTI_PREFIX}{jti}"), expires_at.to_string())
        }
        Revocation::Subject {
            issuer,
            sub,
            issued_before,
            ..
        } => (
            format!("{SUB_PREFIX}{}", serde_json::json!([issuer, sub])),
            issued_before.to_string(),
        ),
    }
}

/// The revocation a stored key and value stand for.
fn from_key_value(key: &str, value: &str, until: Option<i64>) -> Option<Revocation> {
    if let Some(jti) = key.strip_prefix(JTI_PREFIX) {
        return Some(Revocation::Token {
            jti: jti.to_owned(),
            expires_at: value.parse().ok()?,
        });
    }
    let (issuer, sub): (String, String) =
        serde_json::from_str(key.strip_prefix(SUB_PREFIX)?).ok()?;
    Some(Revocation::Subject {
        issuer,
        sub,
        issued_before: value.parse().ok()?,
        until,
    })
}

async fn timed<T>(f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("redis did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let sub = Revocation::Subject {
            issuer: "corp:eu".into(),
            sub: "alice\"x:y".into(),
            issued_before: 1_700_000_000.0,
            until: Some(1_700_003_600),
        };
        let (k, v) = key_value(&sub);
        assert_eq!(from_key_value(&k, &v, Some(1_700_003_600)), Some(sub));
        let token = Revocation::Token {
            jti: "j:1".into(),
            expires_at: 1_700_000_000,
        };
        let (k, v) = key_value(&token);
        assert_eq!(k, "authgate:revoked:jti:j:1");
        assert_eq!(from_key_value(&k, &v, None), Some(token));
    }
}
