//! Function metadata for the call path: an in-memory cache over Postgres.
//!
//! Postgres is the source of truth; this cache only saves a round trip per
//! call. A deploy or delete on this node invalidates the entry. The code
//! itself is unpacked on first use when this node has not seen the version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::PgPool;

use crate::code::{inspect, CodeStore};
use crate::store::functions::{self, Function};

#[derive(Clone)]
pub struct Catalog {
    db: PgPool,
    code: CodeStore,
    /// Cached functions by name; a miss reads Postgres.
    cache: Arc<Mutex<HashMap<String, Arc<Function>>>>,
}

impl Catalog {
    pub fn new(db: PgPool, code: CodeStore) -> Self {
        Self {
            db,
            code,
            cache: Arc::default(),
        }
    }

    pub async fn get(&self, name: &str) -> sqlx::Result<Option<Arc<Function>>> {
        if let Some(f) = self.cache.lock().unwrap().get(name) {
            return Ok(Some(f.clone()));
        }
        let Some(function) = functions::get(&self.db, name).await? else {
            return Ok(None);
        };
        let function = Arc::new(function);
        self.cache
            .lock()
            .unwrap()
            .insert(name.to_string(), function.clone());
        Ok(Some(function))
    }

    pub fn invalidate(&self, name: &str) {
        self.cache.lock().unwrap().remove(name);
    }

    /// The unpacked code of `function`'s version, unpacking it from the zip
    /// in Postgres when this node does not have it yet.
    pub async fn code_dir(&self, function: &Function) -> anyhow::Result<PathBuf> {
        let dir = self.code.path(&function.version);
        if dir.is_dir() {
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
        Ok(dir)
    }
}
