//! Function metadata for the call path: an in-memory cache over Postgres.
//!
//! Postgres is the source of truth; this cache only saves a round trip per
//! call. A deploy, update or delete on any node invalidates the entry at
//! once: a trigger notifies every manager, which follows the notifications
//! on a connection of its own ([`Catalog::follow`]). While that connection
//! is down, entries expire after [`FRESH_FOR`], so another node's deploy is
//! still seen within that time.
//!
//! Postgres being away does not stop calls: a function this node has read
//! is served as last read (stale-while-error), and the lookup gives up after
//! [`LOOKUP_LIMIT`] instead of holding the call. The code itself is unpacked
//! on first use when this node has not seen the version; a version already
//! on disk needs no database.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::code::{inspect, CodeStore};
use crate::function::FunctionSpec;
use crate::store::functions;
use crate::store::is_unreachable;

#[derive(Clone)]
pub struct Catalog {
    db: PgPool,
    code: CodeStore,
    /// Cached functions by name, with when they were read; a miss or a
    /// stale entry reads Postgres.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// Code versions known to be unpacked on this node.
    unpacked: Arc<Mutex<HashSet<String>>>,
    state: Arc<State>,
}

/// A function, when it was read from Postgres, and under which connection
/// of the notification follower (its `epoch`; 0: none was up).
struct Cached {
    read: Instant,
    epoch: u64,
    function: Arc<FunctionSpec>,
    /// An invalidation came while or after it was read: kept only as the
    /// fallback for when Postgres is away, never trusted as fresh.
    doubtful: bool,
}

#[derive(Default)]
struct State {
    /// Bumped at each (re)connection of the follower; 0 while it is down.
    epoch: AtomicU64,
    /// Bumped at every invalidation, so that a read racing one is not cached.
    generation: AtomicU64,
    /// When Postgres last failed a lookup: for a short while after, known
    /// functions are served as cached without asking again.
    failed_at: Mutex<Option<Instant>>,
}

/// How long a cached function is trusted without asking Postgres, when
/// notifications are not being received.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// How long it is trusted while notifications tell of every change; the
/// bound covers a notification lost to a fault the follower did not see.
const FRESH_WHILE_NOTIFIED: Duration = Duration::from_secs(60);
/// How long a call's lookup may take before a cached version is used.
const LOOKUP_LIMIT: Duration = Duration::from_millis(500);
/// After a failed lookup, how long known functions are served as cached
/// without trying Postgres again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The channel the `functions` trigger notifies (migration 0006).
const CHANNEL: &str = "ol_functions";

impl Catalog {
    pub fn new(db: PgPool, code: CodeStore) -> Self {
        Self {
            db,
            code,
            cache: Arc::default(),
            unpacked: Arc::default(),
            state: Arc::default(),
        }
    }

    /// The function named `name`, from the cache when fresh. When Postgres
    /// cannot be reached, a function read before is returned as last read.
    pub async fn get(&self, name: &str) -> sqlx::Result<Option<Arc<FunctionSpec>>> {
        let epoch = self.state.epoch.load(Ordering::Acquire);
        let stale = match self.cache.lock().unwrap().get(name) {
            Some(c) if !c.doubtful && c.read.elapsed() < self.trust(c.epoch, epoch) => {
                return Ok(Some(c.function.clone()))
            }
            Some(c) => Some(c.function.clone()),
            None => None,
        };
        if let Some(stale) = &stale {
            if self.failed_recently() {
                return Ok(Some(stale.clone()));
            }
        }
        let generation = self.state.generation.load(Ordering::Acquire);
        let read = tokio::time::timeout(LOOKUP_LIMIT, functions::get(&self.db, name))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        let function = match read {
            Ok(Some(row)) => {
                Arc::new(FunctionSpec::try_from(row).map_err(|e| sqlx::Error::Decode(e.into()))?)
            }
            Ok(None) => {
                self.forget(name);
                return Ok(None);
            }
            Err(e) if is_unreachable(&e) => {
                *self.state.failed_at.lock().unwrap() = Some(Instant::now());
                let Some(stale) = stale else { return Err(e) };
                tracing::warn!(function = name, error = %e,
                    "Postgres unreachable; serving the function as last read");
                return Ok(Some(stale));
            }
            Err(e) => return Err(e),
        };
        // An invalidation since the read began may mean it is already old
        // (checked under the lock `invalidate` takes).
        let mut cache = self.cache.lock().unwrap();
        let doubtful = self.state.generation.load(Ordering::Acquire) != generation;
        cache.insert(
            name.to_string(),
            Cached {
                read: Instant::now(),
                epoch,
                function: function.clone(),
                doubtful,
            },
        );
        Ok(Some(function))
    }

    /// How long an entry read under follower connection `read_in` is
    /// trusted, the follower being at `now`.
    fn trust(&self, read_in: u64, now: u64) -> Duration {
        if now != 0 && read_in == now {
            FRESH_WHILE_NOTIFIED
        } else {
            FRESH_FOR
        }
    }

    fn failed_recently(&self) -> bool {
        self.state
            .failed_at
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    /// Marks `name` as changed: its next call reads it again. What was
    /// read stays as the fallback for when Postgres is away: a
    /// notification can arrive after the read it announces (a deploy's, on a
    /// loaded node), and dropping the entry then would leave a known
    /// function nothing to serve during an outage.
    pub fn invalidate(&self, name: &str) {
        let mut cache = self.cache.lock().unwrap();
        self.state.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entry) = cache.get_mut(name) {
            entry.doubtful = true;
        }
    }

    /// Forgets `name`: Postgres says it does not exist.
    fn forget(&self, name: &str) {
        let mut cache = self.cache.lock().unwrap();
        self.state.generation.fetch_add(1, Ordering::AcqRel);
        cache.remove(name);
    }

    /// Whether notifications of changes are being received.
    pub fn notified(&self) -> bool {
        self.state.epoch.load(Ordering::Acquire) != 0
    }

    /// Follows the notifications of deploys, updates and deletes from every
    /// node, invalidating entries as they come; reconnects with backoff when
    /// the connection is lost (meanwhile entries expire as without it).
    /// Returns when the pool is closed.
    pub async fn follow(self) {
        let mut backoff = Duration::from_millis(200);
        let mut connections = 0u64;
        while !self.db.is_closed() {
            match self.listen().await {
                Ok(mut listener) => {
                    connections += 1;
                    self.state.epoch.store(connections, Ordering::Release);
                    backoff = Duration::from_millis(200);
                    tracing::debug!("following function changes through Postgres notifications");
                    let end = loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) => self.invalidate(n.payload()),
                            Ok(None) => break "connection lost".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    };
                    self.state.epoch.store(0, Ordering::Release);
                    if !self.db.is_closed() {
                        tracing::warn!(error = %end,
                            "lost the notifications of function changes; cached functions expire after {FRESH_FOR:?} until they are back");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot follow function changes yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen(&self) -> sqlx::Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.db).await?;
        // Reconnecting is this loop's job, so that it knows when
        // notifications were missed.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    /// The unpacked code of `function`'s version, unpacking it from the zip
    /// in Postgres when this node does not have it yet.
    pub async fn code_dir(&self, function: &FunctionSpec) -> anyhow::Result<PathBuf> {
        let dir = self.code.path(&function.version);
        // Known to be on disk: no file system call on the way of a call.
        if self.unpacked.lock().unwrap().contains(&function.version) {
            return Ok(dir);
        }
        if dir.is_dir() {
            self.unpacked
                .lock()
                .unwrap()
                .insert(function.version.clone());
            return Ok(dir);
        }
        let zip = functions::code_zip(&self.db, &function.version)
            .await?
            .with_context(|| {
                format!(
                    "code version {} is missing from the database",
                    function.version
                )
            })?;
        let code = self.code.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let inspected = inspect(&zip).map_err(|e| anyhow::anyhow!("stored zip: {e}"))?;
            code.unpack(&zip, &inspected)?;
            Ok(())
        })
        .await??;
        self.unpacked
            .lock()
            .unwrap()
            .insert(function.version.clone());
        Ok(dir)
    }
}
