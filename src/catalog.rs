//! Function metadata for the call path: an in-memory cache over Postgres.
//!
//! Postgres is the source of truth; this cache only saves a round trip per
//! call. A deploy or delete on this node invalidates the entry at once;
//! entries also expire after [`FRESH_FOR`], so another node's deploy is seen
//! within that time. The code itself is unpacked on first use when this node
//! has not seen the version.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;

use crate::code::{inspect, CodeStore};
use crate::function::FunctionSpec;
use crate::store::functions;

#[derive(Clone)]
pub struct Catalog {
    db: PgPool,
    code: CodeStore,
    /// Cached functions by name, with when they were read; a miss or a
    /// stale entry reads Postgres.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// Code versions known to be unpacked on this node.
    unpacked: Arc<Mutex<HashSet<String>>>,
}

/// A function and when it was read from Postgres.
type Cached = (Instant, Arc<FunctionSpec>);

/// How long a cached function is trusted without asking Postgres.
const FRESH_FOR: Duration = Duration::from_secs(2);

impl Catalog {
    pub fn new(db: PgPool, code: CodeStore) -> Self {
        Self {
            db,
            code,
            cache: Arc::default(),
            unpacked: Arc::default(),
        }
    }

    /// The function named `name`, or `None`. A stored row this manager
    /// cannot read (an unknown runtime) is a decode error.
    pub async fn get(&self, name: &str) -> sqlx::Result<Option<Arc<FunctionSpec>>> {
        if let Some((read, f)) = self.cache.lock().unwrap().get(name) {
            if read.elapsed() < FRESH_FOR {
                return Ok(Some(f.clone()));
            }
        }
        let Some(function) = functions::get(&self.db, name).await? else {
            self.invalidate(name);
            return Ok(None);
        };
        let function =
            FunctionSpec::try_from(function).map_err(|e| sqlx::Error::Decode(e.into()))?;
        let function = Arc::new(function);
        self.cache
            .lock()
            .unwrap()
            .insert(name.to_string(), (Instant::now(), function.clone()));
        Ok(Some(function))
    }

    pub fn invalidate(&self, name: &str) {
        self.cache.lock().unwrap().remove(name);
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
