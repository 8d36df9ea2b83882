//! Where a sandbox lives on the host and how code gets into it.
//!
//! A sandbox is `{data_dir}/sandboxes/{id}/`, mounted at `/host` in the
//! container: the runtime server's socket is `/host/ol.sock`, the function's
//! code is linked into `/host/code` when the container is specialised.

use std::path::Path;

use anyhow::Context;

/// The runtime server's socket, in the sandbox directory.
pub const SOCKET: &str = "ol.sock";
/// Where the function's code is, inside the container.
pub const CODE_IN_CONTAINER: &str = "/host/code";
/// The code directory's name in the sandbox directory.
pub const CODE_DIR: &str = "code";

/// A new sandbox id: short enough for container names, random enough to
/// never repeat on a host.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Makes the sandbox directory.
///
/// It is world-writable with the sticky bit, so the container's unprivileged
/// user can create its socket but cannot touch the code linked in later,
/// which stays owned by the manager and read-only to everyone else.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// The container's name: its function (or `warm` for a generic one) and id,
/// so `docker ps` reads.
pub fn container_name(function: &str, id: &str) -> String {
    format!("ol-{function}-{id}")
}

/// Hard-links (or, across file systems, copies) `src` into `dst`.
pub fn link_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tree_copies_nested_files() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("pkg")).unwrap();
        std::fs::write(src.path().join("pkg/m.py"), "x = 1").unwrap();
        let dst = tempfile::tempdir().unwrap();
        link_tree(src.path(), &dst.path().join("code")).unwrap();
        let copied = std::fs::read_to_string(dst.path().join("code/pkg/m.py")).unwrap();
        assert_eq!(copied, "x = 1");
    }
}
