//! Per-call peak memory from the container's memory cgroup.

use std::sync::Arc;

/// The container's peak memory, from its memory cgroup (v1 or v2).
///
/// Reading a file beats streaming `docker stats`, which loads the engine.
/// The file is opened once per container and read (and, on cgroup v1,
/// reset) in place for every call.
#[derive(Clone, Debug, Default)]
pub struct MemoryPeak {
    /// `memory.max_usage_in_bytes` (v1, resettable) or `memory.peak` (v2).
    file: Option<Arc<std::fs::File>>,
}

impl MemoryPeak {
    pub fn find(container_id: &str) -> Self {
        let candidates = [
            format!("/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak"),
            format!("/sys/fs/cgroup/docker/{container_id}/memory.peak"),
        ];
        let open = |path: &String| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .or_else(|_| std::fs::File::open(path))
                .ok()
        };
        Self {
            file: candidates.iter().find_map(open).map(Arc::new),
        }
    }

    /// Starts a new measurement where the kernel allows it (cgroup v1, as root).
    pub fn reset(&self) {
        use std::os::unix::fs::FileExt;
        if let Some(file) = &self.file {
            let _ = file.write_at(b"0", 0);
        }
    }

    pub fn read_mb(&self) -> Option<i32> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        let bytes: u64 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
        Some(bytes.div_ceil(1024 * 1024) as i32)
    }
}
