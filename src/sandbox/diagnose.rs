//! Crash diagnosis: why a runtime server did not answer, told from the
//! container's state (killed for memory, exited, gone) and its last output.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use futures_util::StreamExt;

use super::docker::Sandboxes;
use super::protocol::request;
use super::{layout, Crash, Failure, Sandbox};
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};

/// Looks at a SIGKILLed container's OOM flag, 50 ms apart: 2 s in all.
const OOM_CHECKS: u32 = 40;

impl Sandboxes {
    /// Waits until the runtime server answers on its socket.
    pub(super) async fn wait_ready(
        &self,
        sandbox: &Sandbox,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let socket = sandbox.socket();
        let mut polls = 0u32;
        loop {
            if socket.exists() {
                let limit = self.settings.max_response_bytes;
                if let Ok(reply) = request(
                    &sandbox.conns,
                    &socket,
                    "GET",
                    "/health",
                    None,
                    Bytes::new(),
                    limit,
                )
                .await
                {
                    if reply.status == 200 {
                        // The server has made its socket: from now on the
                        // function may create nothing in the socket's folder.
                        layout::seal_socket_dir(&sandbox.dir).map_err(Failure::Platform)?;
                        return Ok(());
                    }
                }
            }
            polls += 1;
            // Now and then, check that the container has not died.
            if polls.is_multiple_of(50) {
                if let Some(failure) = self.stopped(sandbox).await {
                    return Err(failure);
                }
            }
            if Instant::now() >= deadline {
                // Only the runtime server ran in it yet: no call's output.
                let logs = self.logs_tail(sandbox).await;
                return Err(Failure::Platform(anyhow!(
                    "the runtime server did not come up within {:?}; its log: {logs}",
                    self.settings.pool.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Explains a failed exchange with the runtime server from the
    /// container's state: killed for memory, exited, or something else.
    pub(super) async fn diagnose(&self, sandbox: &Sandbox, error: anyhow::Error) -> Failure {
        // The engine may take a moment to notice the process is gone.
        for _ in 0..20 {
            if let Some(failure) = self.stopped(sandbox).await {
                return failure;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Failure::Platform(error.context("talking to the runtime server"))
    }

    /// `Some(reason)` when the container is no longer running. A SIGKILL
    /// exit is looked at [`OOM_CHECKS`] times, 50 ms apart, for the
    /// engine's OOM flag.
    async fn stopped(&self, sandbox: &Sandbox) -> Option<Failure> {
        let mut checks = 0;
        loop {
            let state = match self
                .docker
                .inspect_container(&sandbox.container_id, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => c.state.unwrap_or_default(),
                Err(e) => {
                    return Some(Failure::Crashed(Crash {
                        reason: format!("the container is gone ({e})"),
                        output: None,
                    }))
                }
            };
            if state.oom_killed == Some(true) {
                return Some(Failure::OutOfMemory(sandbox.memory_mb));
            }
            if state.running == Some(true) {
                return None;
            }
            let code = state.exit_code.unwrap_or(-1);
            // Killed (SIGKILL): the engine may learn of an OOM kill only
            // after the exit, so look again for a while before calling it
            // a crash (half a second was too short once on a loaded host:
            // an OOM kill recorded as a crash).
            if code == 137 && checks < OOM_CHECKS {
                checks += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            return Some(Failure::Crashed(Crash {
                reason: exit_reason(code),
                output: Some(self.logs_tail(sandbox).await),
            }));
        }
    }

    /// The container's last lines of output, for the owner's logs (and the
    /// operator's error when a runtime server never came up).
    async fn logs_tail(&self, sandbox: &Sandbox) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("200")
            .build();
        let mut stream = self.docker.logs(&sandbox.container_id, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        // At most 64 KiB, the end (the log file itself holds 1 MiB at most).
        let mut start = out.len().saturating_sub(64 * 1024);
        while !out.is_char_boundary(start) {
            start += 1;
        }
        let out = out[start..].trim();
        if out.is_empty() {
            "(empty)".into()
        } else {
            out.to_string()
        }
    }
}

/// What an exit code says, without anything the container printed:
/// `docker-init` passes a signal on as 128 + its number.
pub(super) fn exit_reason(code: i64) -> String {
    const NAMES: [(i64, &str); 11] = [
        (1, "SIGHUP"),
        (2, "SIGINT"),
        (3, "SIGQUIT"),
        (4, "SIGILL"),
        (6, "SIGABRT"),
        (7, "SIGBUS"),
        (8, "SIGFPE"),
        (9, "SIGKILL"),
        (11, "SIGSEGV"),
        (13, "SIGPIPE"),
        (15, "SIGTERM"),
    ];
    match code - 128 {
        signal @ 1..=64 => {
            let name = NAMES.iter().find(|(n, _)| *n == signal).map(|(_, s)| *s);
            match name {
                Some(name) => {
                    format!("the runtime was killed by signal {signal} ({name}, exit code {code})")
                }
                None => format!("the runtime was killed by signal {signal} (exit code {code})"),
            }
        }
        _ => format!("the runtime exited with code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::exit_reason;

    #[test]
    fn exit_codes_name_signals() {
        assert_eq!(exit_reason(1), "the runtime exited with code 1");
        assert_eq!(
            exit_reason(137),
            "the runtime was killed by signal 9 (SIGKILL, exit code 137)"
        );
        assert_eq!(
            exit_reason(139),
            "the runtime was killed by signal 11 (SIGSEGV, exit code 139)"
        );
        assert_eq!(
            exit_reason(170),
            "the runtime was killed by signal 42 (exit code 170)"
        );
        assert_eq!(exit_reason(-1), "the runtime exited with code -1");
    }
}
