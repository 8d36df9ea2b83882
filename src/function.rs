//! A deployed function as the call path sees it: what the catalog hands the
//! pool, the sandbox and the call. Free of storage types; the Postgres row
//! (`store::functions::Function`) converts into it.

use std::collections::BTreeMap;

use crate::manifest::{Network, Runtime};

#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    /// sha256 of the code zip.
    pub version: String,
    pub runtime: Runtime,
    /// `module.function`.
    pub handler: String,
    pub memory_mb: i32,
    pub timeout_ms: i64,
    pub environment: BTreeMap<String, String>,
    /// Allowed methods on the function URL; `None` means any.
    pub http_methods: Option<Vec<String>>,
    /// Calls one container serves at once.
    pub concurrency: i32,
    /// Containers the function may have at once.
    pub max_concurrency: i32,
    /// Package cache directories of its code version, e.g. `six-1.16.0`.
    pub packages: Vec<String>,
    /// The internet (but nothing local), or no network at all.
    pub network: Network,
    /// Its writable `/tmp`, in MiB.
    pub tmp_mb: i32,
}

impl FunctionSpec {
    /// Whether a generic (prewarmed) container, made with `generic_tmp_mb`
    /// of `/tmp` on the function network, can become this function's: its
    /// `/tmp` and network are fixed when it is created.
    pub fn fits_generic(&self, generic_tmp_mb: u64) -> bool {
        self.network == Network::Internet && u64::try_from(self.tmp_mb) == Ok(generic_tmp_mb)
    }

    /// Where its packages are inside a container.
    pub fn package_paths(&self) -> Vec<String> {
        self.packages
            .iter()
            .map(|p| format!("/packages/{p}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_default_sandboxes_take_generic_containers() {
        let f = FunctionSpec {
            name: "f".into(),
            version: "v".into(),
            runtime: Runtime::Python,
            handler: "f.f".into(),
            memory_mb: 128,
            timeout_ms: 1000,
            environment: BTreeMap::new(),
            http_methods: None,
            concurrency: 1,
            max_concurrency: 1,
            packages: Vec::new(),
            network: Network::Internet,
            tmp_mb: 64,
        };
        assert!(f.fits_generic(64));
        assert!(!f.fits_generic(32));
        let offline = FunctionSpec {
            network: Network::None,
            ..f
        };
        assert!(!offline.fits_generic(64));
    }
}
