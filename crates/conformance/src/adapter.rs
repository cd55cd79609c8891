//! The adapter child process and the JSON-lines channel to it (ADAPTER §1).
//!
//! [`AdapterProcess`] is one child: commands are written one per line to its
//! stdin and replies read one per line from its stdout, strictly one command
//! in flight. [`Adapter`] wraps it with the `init` handshake and recovery:
//! when the channel breaks (a command times out, the process exits, or it
//! writes a line that is not JSON) the process is killed and a fresh one is
//! started and initialised, so one bad case cannot desynchronise or stall
//! the rest of the run. The Node runner never restarts (CASE-FORMAT §12).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as JsonValue, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// `init` always gets this long (ADAPTER §1).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// `shutdown` gets this long before the process is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How many stderr lines are kept to explain a crash or a timeout.
const STDERR_TAIL_LINES: usize = 20;

/// Why a command did not produce a usable reply.
#[derive(Debug)]
pub enum ChannelFailure {
    /// The channel is out of step or gone (timeout, exit, unparseable line,
    /// write error); the process has to be replaced.
    Broken(String),
    /// A reply arrived but breaks the adapter protocol; the channel is still
    /// in step.
    Protocol(String),
}

#[derive(Debug)]
struct PendingCommand {
    command_type: String,
    timeout: Duration,
    deadline: Instant,
}

/// One running adapter process.
#[derive(Debug)]
pub struct AdapterProcess {
    child: Child,
    stdin: ChildStdin,
    stdout_lines: mpsc::UnboundedReceiver<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pending: Option<PendingCommand>,
}

impl AdapterProcess {
    /// Starts the executable with stdin, stdout and stderr piped and no
    /// arguments, as the Node runner does.
    pub fn spawn(executable: &Path, echo_stderr: bool) -> Result<Self, String> {
        let mut child = Command::new(executable)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start adapter {}: {error}", executable.display()))?;
        let stdin = child.stdin.take().ok_or("adapter stdin not piped")?;
        let stdout = child.stdout.take().ok_or("adapter stdout not piped")?;
        let stderr = child.stderr.take().ok_or("adapter stderr not piped")?;

        // A reader task turns stdout into a queue of lines, so a reply can be
        // awaited with a deadline and stray lines can be detected.
        let (line_sender, stdout_lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo_stderr {
                    eprintln!("[adapter stderr] {line}");
                }
                let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        Ok(AdapterProcess {
            child,
            stdin,
            stdout_lines,
            stderr_tail,
            pending: None,
        })
    }

    /// Whether a command is waiting for its reply.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The type of the command waiting for its reply.
    pub fn pending_type(&self) -> Option<&str> {
        self.pending
            .as_ref()
            .map(|pending| pending.command_type.as_str())
    }

    /// Writes one command. Its timeout starts now.
    pub async fn send(
        &mut self,
        command: &JsonValue,
        timeout: Duration,
    ) -> Result<(), ChannelFailure> {
        let command_type = command["type"].as_str().unwrap_or_default().to_owned();
        if let Some(pending) = &self.pending {
            return Err(ChannelFailure::Protocol(format!(
                "runner bug: `{command_type}` sent while `{}` is still pending",
                pending.command_type
            )));
        }
        // Any line already queued arrived while no command was pending: the
        // adapter answered something twice or logged to stdout. The Node
        // runner drops such lines silently; here they fail the command.
        let mut stray = Vec::new();
        while let Ok(line) = self.stdout_lines.try_recv() {
            stray.push(line);
        }
        if !stray.is_empty() {
            return Err(ChannelFailure::Protocol(format!(
                "adapter wrote {} line(s) to stdout while no command was pending, first: {}",
                stray.len(),
                truncate(&stray[0], 300)
            )));
        }

        // JSON.stringify-compatible framing: U+2028/U+2029 are escaped so no
        // reader treats them as line breaks. They can only occur inside
        // strings, where the escape is equivalent.
        let mut line = command
            .to_string()
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029");
        line.push('\n');
        let written = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        }
        .await;
        if let Err(error) = written {
            let exit = self.describe_exit().await;
            return Err(ChannelFailure::Broken(format!(
                "cannot write `{command_type}` to the adapter ({error}); {exit}{}",
                self.stderr_context()
            )));
        }
        self.pending = Some(PendingCommand {
            command_type,
            timeout,
            deadline: Instant::now() + timeout,
        });
        Ok(())
    }

    /// Waits for the reply to the pending command, until its deadline.
    pub async fn receive(&mut self) -> Result<JsonValue, ChannelFailure> {
        let Some(pending) = self.pending.take() else {
            return Err(ChannelFailure::Protocol(
                "runner bug: waiting for a reply with no command pending".to_owned(),
            ));
        };
        let line = match tokio::time::timeout_at(pending.deadline, self.stdout_lines.recv()).await {
            Err(_elapsed) => {
                return Err(ChannelFailure::Broken(format!(
                    "Command timed out after {}ms: {}{}",
                    pending.timeout.as_millis(),
                    pending.command_type,
                    self.stderr_context()
                )));
            }
            Ok(None) => {
                let exit = self.describe_exit().await;
                return Err(ChannelFailure::Broken(format!(
                    "{exit} while `{}` was pending{}",
                    pending.command_type,
                    self.stderr_context()
                )));
            }
            Ok(Some(line)) => line,
        };
        let reply: JsonValue = serde_json::from_str(&line).map_err(|error| {
            ChannelFailure::Broken(format!(
                "Failed to parse adapter reply to `{}` ({error}): {}",
                pending.command_type,
                truncate(&line, 300)
            ))
        })?;
        check_reply_shape(&reply, &pending.command_type).map_err(ChannelFailure::Protocol)?;
        Ok(reply)
    }

    /// Sends `shutdown`, waits briefly for the reply and the exit, then kills.
    pub async fn shutdown(mut self) {
        if !self.has_pending()
            && self
                .send(&json!({"type": "shutdown"}), SHUTDOWN_TIMEOUT)
                .await
                .is_ok()
        {
            let _ = self.receive().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        }
        self.kill().await;
    }

    /// Kills the process and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    async fn describe_exit(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                Some(code) => format!("adapter exited with code {code}"),
                None => format!("adapter was killed by a signal ({status})"),
            },
            Ok(Err(error)) => format!("adapter state unknown ({error})"),
            Err(_) => "adapter closed its stdout but is still running".to_owned(),
        }
    }

    fn stderr_context(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            format!("; last adapter stderr: {}", lines.join(" | "))
        }
    }
}

/// Checks the envelope every reply must have (ADAPTER §4): an object with a
/// boolean `success` and a string `type`; a success echoes the command type;
/// a failure has `type:"error"`, the `commandType` it answers, an
/// `errorCode` and a `message`.
pub fn check_reply_shape(reply: &JsonValue, command_type: &str) -> Result<(), String> {
    let Some(object) = reply.as_object() else {
        return Err(format!(
            "reply to `{command_type}` is not a JSON object: {}",
            truncate(&reply.to_string(), 300)
        ));
    };
    let Some(success) = object.get("success").and_then(JsonValue::as_bool) else {
        return Err(format!(
            "reply to `{command_type}` has no boolean `success`: {}",
            truncate(&reply.to_string(), 300)
        ));
    };
    let reply_type = object
        .get("type")
        .and_then(JsonValue::as_str)
        .unwrap_or("<missing>");
    if success {
        if reply_type != command_type {
            return Err(format!(
                "successful reply to `{command_type}` has type `{reply_type}`"
            ));
        }
        return Ok(());
    }
    if reply_type != "error" {
        return Err(format!(
            "failed reply to `{command_type}` has type `{reply_type}`, not `error`"
        ));
    }
    match object.get("commandType").and_then(JsonValue::as_str) {
        Some(answered) if answered == command_type => {}
        Some(answered) => {
            return Err(format!(
                "error reply to `{command_type}` names commandType `{answered}`"
            ));
        }
        None => {
            return Err(format!(
                "error reply to `{command_type}` has no string `commandType`"
            ));
        }
    }
    for field in ["errorCode", "message"] {
        if !object.get(field).is_some_and(JsonValue::is_string) {
            return Err(format!(
                "error reply to `{command_type}` has no string `{field}`"
            ));
        }
    }
    Ok(())
}

/// What the adapter said about itself in its `init` reply.
#[derive(Debug, Clone, Default)]
pub struct AdapterInfo {
    /// `clientName`.
    pub client_name: String,
    /// `clientVersion`.
    pub client_version: String,
    /// Feature keys whose value is `true`.
    pub features: BTreeSet<String>,
}

/// The adapter as the runner uses it: a process that is restarted and
/// re-initialised whenever its channel breaks.
#[derive(Debug)]
pub struct Adapter {
    executable: PathBuf,
    server_url: String,
    echo_stderr: bool,
    process: Option<AdapterProcess>,
    /// Set when a restart failed; every later command fails with it.
    unavailable: Option<String>,
    /// The first successful `init` reply; feature skipping uses it.
    pub info: AdapterInfo,
    /// How many times the process was replaced.
    pub restarts: usize,
}

impl Adapter {
    /// Starts the adapter and performs `init`.
    pub async fn start(
        executable: &Path,
        server_url: &str,
        echo_stderr: bool,
    ) -> Result<Self, String> {
        let (process, info) = launch(executable, server_url, echo_stderr).await?;
        Ok(Adapter {
            executable: executable.to_owned(),
            server_url: server_url.to_owned(),
            echo_stderr,
            process: Some(process),
            unavailable: None,
            info,
            restarts: 0,
        })
    }

    /// Whether a (background) command is waiting for its reply.
    pub fn has_pending(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(AdapterProcess::has_pending)
    }

    /// Sends a command and waits for its reply.
    pub async fn request(
        &mut self,
        command: &JsonValue,
        timeout: Duration,
    ) -> Result<JsonValue, String> {
        self.send(command, timeout).await?;
        self.receive().await
    }

    /// Sends a command without waiting (a background read).
    pub async fn send(&mut self, command: &JsonValue, timeout: Duration) -> Result<(), String> {
        let process = self.process()?;
        match process.send(command, timeout).await {
            Ok(()) => Ok(()),
            Err(failure) => Err(self.recover(failure).await),
        }
    }

    /// Waits for the reply to the pending command.
    pub async fn receive(&mut self) -> Result<JsonValue, String> {
        let process = self.process()?;
        match process.receive().await {
            Ok(reply) => Ok(reply),
            Err(failure) => Err(self.recover(failure).await),
        }
    }

    /// Waits out a reply nobody will use (an orphaned background read), so
    /// that it cannot be paired with the next command. Returns a note when
    /// the wait failed and the adapter had to be restarted.
    pub async fn discard_pending(&mut self) -> Option<String> {
        if !self.has_pending() {
            return None;
        }
        let pending_type = self
            .process
            .as_ref()
            .and_then(AdapterProcess::pending_type)
            .unwrap_or_default()
            .to_owned();
        match self.receive().await {
            Ok(_) => None,
            Err(error) => Some(format!("while discarding `{pending_type}`: {error}")),
        }
    }

    /// Shuts the current process down.
    pub async fn shutdown(mut self) {
        if let Some(process) = self.process.take() {
            process.shutdown().await;
        }
    }

    fn process(&mut self) -> Result<&mut AdapterProcess, String> {
        if let Some(reason) = &self.unavailable {
            return Err(format!("adapter unavailable: {reason}"));
        }
        self.process
            .as_mut()
            .ok_or_else(|| "adapter unavailable".to_owned())
    }

    /// Turns a failure into a message, replacing the process when the
    /// channel is broken.
    async fn recover(&mut self, failure: ChannelFailure) -> String {
        match failure {
            ChannelFailure::Protocol(message) => format!("adapter protocol violation: {message}"),
            ChannelFailure::Broken(message) => {
                if let Some(process) = self.process.take() {
                    process.kill().await;
                }
                self.restarts += 1;
                match launch(&self.executable, &self.server_url, self.echo_stderr).await {
                    Ok((process, _info)) => {
                        self.process = Some(process);
                        format!("{message} (adapter restarted)")
                    }
                    Err(error) => {
                        self.unavailable = Some(format!("restart failed: {error}"));
                        format!("{message} (adapter restart failed: {error})")
                    }
                }
            }
        }
    }
}

/// Spawns the adapter and performs the `init` handshake.
async fn launch(
    executable: &Path,
    server_url: &str,
    echo_stderr: bool,
) -> Result<(AdapterProcess, AdapterInfo), String> {
    let mut process = AdapterProcess::spawn(executable, echo_stderr)?;
    let command = json!({"type": "init", "serverUrl": server_url});
    let reply = match process.send(&command, INIT_TIMEOUT).await {
        Ok(()) => process.receive().await,
        Err(failure) => Err(failure),
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(ChannelFailure::Broken(message) | ChannelFailure::Protocol(message)) => {
            process.kill().await;
            return Err(format!("init failed: {message}"));
        }
    };
    if reply["success"] != json!(true) {
        process.kill().await;
        return Err(format!("init was refused: {reply}"));
    }
    let features = reply["features"]
        .as_object()
        .map(|features| {
            features
                .iter()
                .filter(|(_, enabled)| enabled.as_bool() == Some(true))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    let info = AdapterInfo {
        client_name: reply["clientName"].as_str().unwrap_or("?").to_owned(),
        client_version: reply["clientVersion"].as_str().unwrap_or("?").to_owned(),
        features,
    };
    Ok((process, info))
}

/// Shortens `text` to at most `limit` characters for messages.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(limit).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape_rules() {
        assert!(check_reply_shape(&json!({"type": "read", "success": true}), "read").is_ok());
        assert!(check_reply_shape(&json!({"type": "head", "success": true}), "read").is_err());
        assert!(check_reply_shape(&json!({"type": "read"}), "read").is_err());
        assert!(check_reply_shape(&json!([1]), "read").is_err());
        let error = json!({"type": "error", "success": false, "commandType": "read",
                           "errorCode": "NOT_FOUND", "message": "no /x"});
        assert!(check_reply_shape(&error, "read").is_ok());
        assert!(check_reply_shape(&error, "head").is_err());
        let untyped = json!({"type": "read", "success": false, "commandType": "read",
                             "errorCode": "X", "message": "m"});
        assert!(check_reply_shape(&untyped, "read").is_err());
        let no_message = json!({"type": "error", "success": false, "commandType": "read",
                                "errorCode": "X"});
        assert!(check_reply_shape(&no_message, "read").is_err());
    }
}
