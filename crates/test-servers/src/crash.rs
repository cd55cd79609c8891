//! Crashes: `kill -9` a running Rust server and start it again on the same
//! port and data directory, as a process supervisor would after a crash.

use std::thread;
use std::time::{Duration, Instant};

use super::{
    Proc, STARTUP_TIMEOUT, ServerKind, TestServer, Watchdog, rust_server_bin, rust_server_command,
};

impl TestServer {
    /// Kills the server with `SIGKILL` (no shutdown, no flush: a crash) and
    /// waits for the process to be gone. Its data directory is kept for
    /// [`TestServer::restart`]. Killing a killed server does nothing.
    pub fn kill(&mut self) -> Result<(), String> {
        if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        // Disarm the watchdog first: it would act on a recycled pid.
        drop(self.watchdog.take());
        self.child
            .kill()
            .map_err(|e| format!("cannot kill the {} server: {e}", self.kind))?;
        self.child.wait().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the Rust server again (after [`TestServer::kill`]; a running
    /// server is killed first) on the same port and data directory with the
    /// same options, and waits until it listens. `Err` for the Node server
    /// (its state is in memory: a restart would not recover anything).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.kind != ServerKind::Rust {
            return Err(format!(
                "restart is only supported for the Rust server, not {}",
                self.kind
            ));
        }
        self.kill()?;
        let bin = rust_server_bin().ok_or("the Rust server binary is gone")?;
        let data_dir = self
            .data_dir()
            .ok_or("the Rust server has no data directory")?
            .to_path_buf();
        let opts = self.options.clone();
        let port = self.addr.port();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut cmd = rust_server_command(&bin, port, &data_dir, &opts);
            let mut proc = Proc::spawn(self.kind, &mut cmd)
                .map_err(|e| format!("failed to spawn {}: {e}", bin.display()))?;
            match proc.wait_until_listening(self.addr, deadline) {
                Ok(()) => {
                    let (child, log) = proc.into_parts();
                    self.watchdog = Watchdog::spawn(child.id(), &data_dir);
                    self.child = child;
                    self.log = log;
                    return Ok(());
                }
                Err(reason) => {
                    let message = proc.fail(&format!("restart on port {port}: {reason}"));
                    let lower = message.to_ascii_lowercase();
                    let in_use = lower.contains("addrinuse")
                        || lower.contains("address already in use")
                        || lower.contains("bind failed");
                    // The old socket may linger for a moment after the kill.
                    if in_use && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    return Err(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_request;

    #[test]
    fn rust_server_survives_kill_and_restart_with_its_data() {
        let mut server = TestServer::start(ServerKind::Rust);
        let url = server.stream_url("crash");
        let ct = [("content-type", "text/plain")];
        assert_eq!(http_request("PUT", &url, &ct, b"").unwrap().status, 201);
        assert_eq!(
            http_request("POST", &url, &ct, b"kept").unwrap().status,
            204
        );
        let pid = server.pid();
        server.kill().unwrap();
        assert!(!server.is_running());
        assert!(http_request("GET", &url, &[], b"").is_err());
        server.restart().unwrap();
        assert!(server.is_running());
        assert_ne!(server.pid(), pid);
        let back = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
        assert_eq!(back.text(), "kept");
    }
}
