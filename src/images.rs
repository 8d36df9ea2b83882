//! Runtime images, built by the manager itself from the base image.
//!
//! The build contexts under `images/` are embedded in the binary, so a copied
//! `ol` can build its own images. Each image is tagged by the sha256 of its
//! build context and of the base image's id: an unchanged context on an
//! unchanged base is never rebuilt, and any change gives a new tag.

use std::collections::HashMap;

use anyhow::{bail, Context};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::manifest::Runtime;

/// One file of a build context.
struct ContextFile {
    path: &'static str,
    mode: u32,
    body: &'static [u8],
}

const PYTHON: &[ContextFile] = &[
    ContextFile {
        path: "Dockerfile",
        mode: 0o644,
        body: include_bytes!("../images/python/Dockerfile"),
    },
    ContextFile {
        path: "server.py",
        mode: 0o644,
        body: include_bytes!("../images/python/server.py"),
    },
    ContextFile {
        path: "install.py",
        mode: 0o644,
        body: include_bytes!("../images/python/install.py"),
    },
];

const NODE: &[ContextFile] = &[
    ContextFile {
        path: "Dockerfile",
        mode: 0o644,
        body: include_bytes!("../images/node/Dockerfile"),
    },
    ContextFile {
        path: "server.js",
        mode: 0o644,
        body: include_bytes!("../images/node/server.js"),
    },
];

fn context_files(runtime: Runtime) -> &'static [ContextFile] {
    match runtime {
        Runtime::Python => PYTHON,
        Runtime::Node => NODE,
    }
}

/// The build context as a tar, byte-for-byte the same on every run.
fn context_tar(runtime: Runtime) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in context_files(runtime) {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.body.len() as u64);
        header.set_mode(file.mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append_data(&mut header, file.path, file.body)?;
    }
    Ok(builder.into_inner()?)
}

/// The tag an image of `runtime` on `base_image_id` gets.
fn image_tag(runtime: Runtime, context: &[u8], base_image_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(context);
    hash.update(base_image_id.as_bytes());
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("openlambda/{}:{hex}", runtime.as_str())
}

/// Returns the tag of `runtime`'s image on `base_image`, building it first
/// when it does not exist yet.
pub async fn ensure(docker: &Docker, base_image: &str, runtime: Runtime) -> anyhow::Result<String> {
    let base = docker.inspect_image(base_image).await.map_err(|e| {
        anyhow::anyhow!(
            "base image {base_image:?} is not available ({e}). No registry is needed: run \
             images/bootstrap-base.sh and set OL_BASE_IMAGE to the tag it prints \
             (openlambda/base:bookworm)"
        )
    })?;
    let base_id = base.id.unwrap_or_default();
    let context = context_tar(runtime)?;
    let tag = image_tag(runtime, &context, &base_id);
    if docker.inspect_image(&tag).await.is_ok() {
        tracing::debug!(%tag, "runtime image is up to date");
        return Ok(tag);
    }

    tracing::info!(%tag, base = base_image, "building runtime image (first start or changed context)");
    let started = std::time::Instant::now();
    let labels = HashMap::from([("openlambda.runtime", runtime.as_str())]);
    let args = HashMap::from([("BASE", base_image)]);
    let options = BuildImageOptionsBuilder::default()
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&args)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("building {tag}"))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            bail!("building {tag} failed: {err}");
        }
        if let Some(line) = info.stream.as_deref().map(str::trim_end) {
            if !line.is_empty() {
                tracing::info!(target: "openlambda::images", "{}: {line}", runtime.as_str());
            }
        }
    }
    docker
        .inspect_image(&tag)
        .await
        .with_context(|| format!("image {tag} missing after its build"))?;
    tracing::info!(%tag, secs = started.elapsed().as_secs_f32(), "runtime image built");
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_reproducible() {
        let a = context_tar(Runtime::Python).unwrap();
        let b = context_tar(Runtime::Python).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            image_tag(Runtime::Python, &a, "x"),
            image_tag(Runtime::Python, &b, "x")
        );
    }

    #[test]
    fn tag_changes_with_the_base() {
        let ctx = context_tar(Runtime::Python).unwrap();
        assert_ne!(
            image_tag(Runtime::Python, &ctx, "sha256:aa"),
            image_tag(Runtime::Python, &ctx, "sha256:bb")
        );
        assert!(image_tag(Runtime::Python, &ctx, "x").starts_with("openlambda/python:"));
    }
}
