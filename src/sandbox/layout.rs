//! Where a sandbox lives on the host and how code gets into it.
//!
//! A sandbox is `{data_dir}/sandboxes/{id}/`, mounted read-only at `/host`
//! in the container: the function's code is linked into `/host/code` when
//! the container is specialised. The one thing the container writes there
//! is the runtime server's socket, `/host/sock/ol.sock`, in a folder of its
//! own that is mounted read-write and sealed (no new entries) as soon as
//! the server is up, so a function cannot fill the host's disk through it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The socket's folder, in the sandbox directory.
pub const SOCKET_DIR: &str = "sock";
/// Where the socket's folder is, inside the container.
pub const SOCKET_DIR_IN_CONTAINER: &str = "/host/sock";
/// The runtime server's socket, in its folder.
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

/// The runtime server's socket on the host.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET_DIR).join(SOCKET)
}

/// The socket's path inside the container (`OL_SOCKET` of the servers).
pub fn socket_in_container() -> String {
    format!("{SOCKET_DIR_IN_CONTAINER}/{SOCKET}")
}

/// Makes the sandbox directory (the manager's, read-only in the container)
/// and its socket folder, world-writable with the sticky bit until the
/// runtime server has made its socket ([`seal_socket_dir`]).
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    let sock = dir.join(SOCKET_DIR);
    std::fs::create_dir_all(&sock).with_context(|| format!("creating {}", sock.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// Takes write permission on the socket folder from everyone but its owner
/// (the manager): the container's user can no longer create, fill or remove
/// anything in it, and the socket it made still accepts connections.
pub fn seal_socket_dir(dir: &Path) -> anyhow::Result<()> {
    let sock = dir.join(SOCKET_DIR);
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("sealing {}", sock.display()))
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
    fn socket_folder_is_open_until_sealed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("s");
        prepare_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join(SOCKET_DIR)), 0o1777);
        seal_socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir.join(SOCKET_DIR)), 0o755);
        assert_eq!(socket(&dir), dir.join("sock/ol.sock"));
        assert_eq!(socket_in_container(), "/host/sock/ol.sock");
    }

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
