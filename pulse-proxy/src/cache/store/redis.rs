//! The Redis store: one cache shared by every gateway instance.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use super::{CacheKey, CacheStore, CachedResponse, Lookup, StoreError, StoreFuture, StoredEntry};

/// The default key namespace.
const DEFAULT_NAMESPACE: &str = "pulse:cache";
/// The first bytes of every encoded entry (format version 1).
const MAGIC: &[u8; 4] = b"PCE1";

/// A [`CacheStore`] in Redis, shared by every gateway that points at the same server.
///
/// Keys live under a namespace (default `pulse:cache`): entries at
/// `<ns>:e:<sha256 of the cache key>` with a Redis expiry (`PX`), so user ids never
/// appear in key names, and one generation counter per scope at `<ns>:g:<scope>`. A
/// lookup is one `MGET` (the key's scope counters and the entry); an invalidation is one
/// `INCR` per scope. Values are a small binary encoding of status, headers, body, the
/// time stored and the generation.
///
/// Uses a [`ConnectionManager`], which reconnects on its own; a failing Redis makes
/// requests bypass the cache, never fail.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    namespace: Arc<str>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn backend(err: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(err))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`) with a 1 s connect timeout and a
    /// 500 ms response timeout: a cache that answers slower than that is not worth
    /// waiting for.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backend)?;
        Ok(Self::new(conn))
    }

    /// A store over an existing connection manager.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            namespace: Arc::from(DEFAULT_NAMESPACE),
        }
    }

    /// Puts every key under `namespace` instead of `pulse:cache` (to separate
    /// environments, or tests, sharing one server).
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<Arc<str>>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let mut out = String::with_capacity(self.namespace.len() + 3 + 64);
        out.push_str(&self.namespace);
        out.push_str(":e:");
        for byte in digest {
            use std::fmt::Write as _;
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    fn generation_key(&self, scope: &str) -> String {
        format!("{}:g:{scope}", self.namespace)
    }
}

impl CacheStore for RedisStore {
    fn get(&self, key: &CacheKey) -> StoreFuture<Lookup> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        for scope in key.scopes() {
            cmd.arg(self.generation_key(scope));
        }
        cmd.arg(self.entry_key(key));
        Box::pin(async move {
            let mut values: Vec<Option<Vec<u8>>> =
                cmd.query_async(&mut conn).await.map_err(backend)?;
            let entry = values.pop().flatten();
            let generation = values
                .iter()
                .map(|v| {
                    v.as_deref()
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .fold(0u64, u64::wrapping_add);
            let entry = match entry {
                Some(bytes) => Some(decode(Bytes::from(bytes))?),
                None => None,
            };
            Ok(Lookup::new(entry, generation))
        })
    }

    fn put(
        &self,
        key: &CacheKey,
        response: Arc<CachedResponse>,
        generation: u64,
        ttl: Duration,
    ) -> StoreFuture<()> {
        let mut conn = self.conn.clone();
        let entry_key = self.entry_key(key);
        Box::pin(async move {
            let value = encode(&response, generation, SystemTime::now());
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            redis::cmd("SET")
                .arg(entry_key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(millis)
                .query_async::<()>(&mut conn)
                .await
                .map_err(backend)
        })
    }

    fn invalidate(&self, scopes: &[Arc<str>]) -> StoreFuture<()> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for scope in scopes {
            pipe.cmd("INCR").arg(self.generation_key(scope)).ignore();
        }
        Box::pin(async move { pipe.query_async::<()>(&mut conn).await.map_err(backend) })
    }
}

/// `MAGIC, stored_at_ms u64, generation u64, status u16, header count u32,
/// (name_len u16, name, value_len u32, value)*, body`.
fn encode(response: &CachedResponse, generation: u64, now: SystemTime) -> Bytes {
    let stored_at = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut buf = BytesMut::with_capacity(response.size_bytes() + 32);
    buf.put_slice(MAGIC);
    buf.put_u64(stored_at);
    buf.put_u64(generation);
    buf.put_u16(response.status.as_u16());
    buf.put_u32(u32::try_from(response.headers.len()).unwrap_or(u32::MAX));
    for (name, value) in &response.headers {
        // Header names are short (hyper caps them far below 64 KiB).
        buf.put_u16(u16::try_from(name.as_str().len()).unwrap_or(u16::MAX));
        buf.put_slice(name.as_str().as_bytes());
        buf.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        buf.put_slice(value.as_bytes());
    }
    buf.put_slice(&response.body);
    buf.freeze()
}

fn decode(mut buf: Bytes) -> Result<StoredEntry, StoreError> {
    fn need(buf: &Bytes, n: usize) -> Result<(), StoreError> {
        if buf.remaining() < n {
            Err(StoreError::Corrupt)
        } else {
            Ok(())
        }
    }
    need(&buf, MAGIC.len() + 8 + 8 + 2 + 4)?;
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Corrupt);
    }
    buf.advance(MAGIC.len());
    let stored_at = UNIX_EPOCH + Duration::from_millis(buf.get_u64());
    let generation = buf.get_u64();
    let status = StatusCode::from_u16(buf.get_u16()).map_err(|_| StoreError::Corrupt)?;
    let count = buf.get_u32() as usize;
    let mut headers = HeaderMap::with_capacity(count.min(128));
    for _ in 0..count {
        need(&buf, 2)?;
        let name_len = usize::from(buf.get_u16());
        need(&buf, name_len + 4)?;
        let name =
            HeaderName::from_bytes(&buf.split_to(name_len)).map_err(|_| StoreError::Corrupt)?;
        let value_len = buf.get_u32() as usize;
        need(&buf, value_len)?;
        let value = HeaderValue::from_maybe_shared(buf.split_to(value_len))
            .map_err(|_| StoreError::Corrupt)?;
        headers.append(name, value);
    }
    let age = SystemTime::now()
        .duration_since(stored_at)
        .unwrap_or(Duration::ZERO);
    Ok(StoredEntry::new(
        Arc::new(CachedResponse::new(status, headers, buf)),
        generation,
        age,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let response = CachedResponse::new(StatusCode::OK, headers, Bytes::from_static(b"{}"));
        let bytes = encode(&response, 7, SystemTime::now());
        let entry = decode(bytes.clone()).unwrap();
        assert_eq!(*entry.response, response);
        assert_eq!(entry.generation, 7);
        for cut in 0..bytes.len() - 2 {
            // Truncated values never panic, and never decode into something else.
            if let Ok(e) = decode(bytes.slice(..cut)) {
                assert_ne!(*e.response, response);
            }
        }
        assert!(matches!(
            decode(Bytes::from_static(b"nope")),
            Err(StoreError::Corrupt)
        ));
    }
}
