//! The client subcommands of `ol`: deploy, invoke, list, info, logs,
//! billing, delete. Each is a thin use of the HTTP API.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::client::Api;

/// Files and folders never worth uploading.
const SKIP: [&str; 5] = [".git", "__pycache__", ".venv", ".DS_Store", ".pytest_cache"];

pub async fn deploy(api: &Api, source: &Path, name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let zip = if source.is_dir() {
        let (zip, files) = zip_folder(source)?;
        eprintln!(
            "zipped {} ({files} files, {})",
            source.display(),
            human_bytes(zip.len() as u64)
        );
        zip
    } else if source.is_file() {
        std::fs::read(source).with_context(|| format!("reading {}", source.display()))?
    } else {
        bail!(
            "{} does not exist; give a folder holding your handler (f.py) or a zip of it",
            source.display()
        );
    };
    eprintln!("uploading to {} ...", api.base);
    let answer = api
        .send(
            Method::PUT,
            &format!("/api/v1/functions/{name}"),
            Some("application/zip"),
            Bytes::from(zip),
        )
        .await?
        .ok()?;
    let created = answer.status == 201;
    let f = answer.json()?;
    eprintln!(
        "{} {name} (version {}, {} MB, timeout {} s) in {:.1} s",
        if created { "created" } else { "updated" },
        f["version"]
            .as_str()
            .unwrap_or("?")
            .get(..12)
            .unwrap_or("?"),
        f["memory_mb"],
        f["timeout_ms"].as_i64().unwrap_or(0) / 1000,
        started.elapsed().as_secs_f64()
    );
    if let Some(line) = packages_line(&f) {
        eprintln!("{line}");
    }
    println!("{}", f["url"].as_str().unwrap_or_default());
    Ok(())
}

/// What a deploy did about packages, in one line: how many, how many
/// installed, and whether the versions came from the resolution memo
/// (`cached`: no builder ran) or pip's resolver (`resolved`).
fn packages_line(deployed: &Value) -> Option<String> {
    let steps = deployed["packages"].as_array()?;
    let resolution = deployed["packages_resolution"].as_str()?;
    let installed = steps.iter().filter(|s| s["status"] == "installed").count();
    Some(format!(
        "packages: {} ({installed} installed), resolution {resolution}, in {} ms",
        steps.len(),
        deployed["packages_ms"].as_u64().unwrap_or(0)
    ))
}

/// Zips a folder's files with paths relative to it.
pub fn zip_folder(dir: &Path) -> anyhow::Result<(Vec<u8>, usize)> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for rel in &files {
        let name = rel.to_string_lossy().replace('\\', "/");
        w.start_file(name, options)?;
        let body = std::fs::read(dir.join(rel))?;
        w.write_all(&body)?;
    }
    Ok((w.finish()?.into_inner(), files.len()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
        // Symlinks are left out: the platform refuses them.
    }
    Ok(())
}

/// The event of `ol invoke`: `--data`, else `--data-file`, else none.
pub fn event_body(data: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    Ok(match (data, file) {
        (Some(d), _) => d,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => String::new(),
    })
}

pub async fn invoke(api: &Api, name: &str, body: String) -> anyhow::Result<()> {
    let answer = api
        .send(
            Method::POST,
            // Through the management API, with the caller's key: the
            // function listener may be on another address.
            &format!("/api/v1/functions/{name}/run"),
            Some("application/json"),
            Bytes::from(body),
        )
        .await?
        .ok()?;
    std::io::stdout().write_all(&answer.body)?;
    println!();
    Ok(())
}

pub async fn list(api: &Api) -> anyhow::Result<()> {
    let all = api.get("/api/v1/functions").await?.ok()?.json()?;
    let functions = all["functions"].as_array().cloned().unwrap_or_default();
    if functions.is_empty() {
        println!("no functions yet; deploy one with: ol deploy ./hello --name hello");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                text(&f["name"]),
                text(&f["runtime"]),
                format!("{} MB", f["memory_mb"]),
                text(&f["updated_at"])
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
                text(&f["url"]),
            ]
        })
        .collect();
    print_table(
        &["NAME", "RUNTIME", "MEMORY", "UPDATED (UTC)", "URL"],
        &rows,
    );
    Ok(())
}

pub async fn info(api: &Api, name: &str) -> anyhow::Result<()> {
    let f = api
        .get(&format!("/api/v1/functions/{name}"))
        .await?
        .ok()?
        .json()?;
    for key in [
        "name",
        "url",
        "version",
        "runtime",
        "handler",
        "memory_mb",
        "timeout_ms",
        "concurrency",
        "max_concurrency",
        "http_methods",
        "environment",
        "created_at",
        "updated_at",
    ] {
        println!("{key:<16} {}", text(&f[key]));
    }
    super::events::schedules(api, name).await?;
    let calls = api
        .get(&format!("/api/v1/functions/{name}/invocations?limit=10"))
        .await?
        .ok()?
        .json()?;
    let calls = calls["invocations"].as_array().cloned().unwrap_or_default();
    println!("\nrecent calls:");
    if calls.is_empty() {
        println!("  none yet; try: ol invoke {name} --data '{{}}'");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|c| {
            vec![
                text(&c["started_at"])
                    .chars()
                    .take(23)
                    .collect::<String>()
                    .replace('T', " "),
                text(&c["status"]),
                format!("{} ms", c["duration_ms"]),
                match (c["start"].as_str(), c["cold"] == true) {
                    (Some(start), _) => start.into(),
                    (None, true) => "cold".into(),
                    (None, false) => "warm".into(),
                },
                text(&c["request_id"]),
            ]
        })
        .collect();
    print_table(
        &["STARTED (UTC)", "STATUS", "DURATION", "START", "REQUEST ID"],
        &rows,
    );
    Ok(())
}

pub async fn logs(api: &Api, name: &str, follow: bool) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut first = true;
    loop {
        let answer = api
            .get(&format!("/api/v1/functions/{name}/logs?limit=50"))
            .await?
            .ok()?
            .json()?;
        let mut entries = answer["logs"].as_array().cloned().unwrap_or_default();
        entries.reverse(); // oldest first
        for e in entries {
            let id = text(&e["request_id"]);
            if seen.insert(id.clone()) {
                println!(
                    "--- {} {} {}",
                    text(&e["started_at"]),
                    text(&e["status"]),
                    id
                );
                print!("{}", text(&e["logs"]));
            }
        }
        if first && seen.is_empty() && !follow {
            println!("no output kept for {name} (calls that print nothing leave none)");
        }
        first = false;
        if !follow {
            return Ok(());
        }
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn billing(
    api: &Api,
    from: Option<String>,
    to: Option<String>,
    function: Option<String>,
    csv: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    for (key, value) in [("from", from), ("to", to), ("function", function)] {
        if let Some(v) = value {
            query.push(format!("{key}={v}"));
        }
    }
    if csv {
        query.push("format=csv".into());
    }
    let path = format!("/api/v1/billing?{}", query.join("&"));
    let answer = api.get(&path).await?.ok()?;
    if csv {
        std::io::stdout().write_all(&answer.body)?;
        return Ok(());
    }
    let report = answer.json()?;
    println!(
        "billing from {} up to {} (UTC), {}",
        text(&report["from"]),
        text(&report["to"]),
        text(&report["currency"])
    );
    let line = |name: String, f: &Value| {
        vec![
            name,
            text(&f["invocations"]),
            format!("{:.1} s", f["billed_ms"].as_f64().unwrap_or(0.0) / 1000.0),
            format!("{:.4}", f["gb_seconds"].as_f64().unwrap_or(0.0)),
            format!("${:.8}", f["cost"].as_f64().unwrap_or(0.0)),
        ]
    };
    let mut rows: Vec<Vec<String>> = report["functions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| line(text(&f["name"]), f))
        .collect();
    rows.push(line("TOTAL".into(), &report["total"]));
    print_table(
        &["FUNCTION", "INVOCATIONS", "BILLED", "GB-SECONDS", "COST"],
        &rows,
    );
    Ok(())
}

pub async fn delete(api: &Api, name: &str) -> anyhow::Result<()> {
    api.send(
        Method::DELETE,
        &format!("/api/v1/functions/{name}"),
        None,
        Bytes::new(),
    )
    .await?
    .ok()?;
    println!("deleted {name} (its records and bill stay)");
    Ok(())
}

/// A JSON value as plain text (strings without quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", render(header.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", render(row.clone()));
    }
}

fn human_bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zips_a_folder_without_clutter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.py"), "def f(e): return e").unwrap();
        std::fs::create_dir_all(dir.path().join("lib/__pycache__")).unwrap();
        std::fs::write(dir.path().join("lib/util.py"), "x = 1").unwrap();
        std::fs::write(dir.path().join("lib/__pycache__/util.pyc"), "junk").unwrap();
        let (zip, files) = zip_folder(dir.path()).unwrap();
        assert_eq!(files, 2);
        let inspected = crate::code::inspect(&zip).unwrap();
        assert_eq!(inspected.strip_prefix, "");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        let names: Vec<String> = (0..archive.len())
            .map(|i| archive.by_index(i).unwrap().name().unwrap().to_string())
            .collect();
        assert_eq!(names, ["f.py", "lib/util.py"]);
    }

    #[test]
    fn says_where_the_package_versions_came_from() {
        let deployed = serde_json::json!({
            "packages": [{"status": "cached"}, {"status": "installed"}],
            "packages_ms": 12,
            "packages_resolution": "cached",
        });
        assert_eq!(
            packages_line(&deployed).unwrap(),
            "packages: 2 (1 installed), resolution cached, in 12 ms"
        );
        let plain = serde_json::json!({"packages": [], "packages_resolution": null});
        assert_eq!(packages_line(&plain), None, "no requirements.txt");
    }
}
