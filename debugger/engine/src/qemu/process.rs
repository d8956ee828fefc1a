//! [`QemuProcess`]: a QEMU started from a [`QemuConfig`], killed when dropped. Every QEMU the
//! project starts (sessions, xtask, the boot tests, the gdb and symbol tests) goes through it.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{Console, QemuConfig};
use super::error::QemuError;
use super::exit::ExitVerdict;

/// Largest amount of QEMU's stderr kept.
const MAX_STDERR: usize = 16 << 10;
/// How often a wait looks at the process.
const POLL: Duration = Duration::from_millis(20);

/// A running QEMU. Its console is piped when the configuration says [`Console::Stdio`]; what
/// it prints on stderr (its own errors) is kept, bounded. Dropping it kills QEMU.
pub struct QemuProcess {
    child: Mutex<Child>,
    console: Mutex<Option<ChildStdout>>,
    stdin: Mutex<Option<ChildStdin>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Mutex<Option<JoinHandle<()>>>,
    /// The command line, for messages.
    pub command_line: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a QEMU's input goes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuInput {
    Null,
    /// Written through [`QemuProcess::take_stdin`] (typing at the guest console).
    Piped,
    /// The caller's own stdin (the user's terminal).
    Inherit,
}

/// Where a QEMU's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuOutput {
    Null,
    /// Read through [`QemuProcess::take_console`].
    Piped,
    /// The caller's own stdout (the user's terminal).
    Inherit,
}

/// A QEMU's standard streams. Its stderr is always kept (bounded) for messages; with
/// `echo_stderr` it is also copied to ours as it comes, as if QEMU wrote there itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuIo {
    pub stdin: QemuInput,
    pub stdout: QemuOutput,
    pub echo_stderr: bool,
}

impl QemuConfig {
    /// Starts QEMU with stdin closed.
    pub fn spawn(&self) -> Result<QemuProcess, QemuError> {
        let cmd = self.command()?;
        let stdout = match self.console {
            Console::Stdio => QemuOutput::Piped,
            _ => QemuOutput::Null,
        };
        QemuProcess::spawn_command(
            cmd,
            self.display(),
            QemuIo {
                stdin: QemuInput::Null,
                stdout,
                echo_stderr: false,
            },
        )
    }

    /// Runs QEMU to the end, capturing the console; kills it after `timeout`.
    pub fn run_captured(&self, timeout: Duration) -> Result<Captured, QemuError> {
        let start = Instant::now();
        let q = self.spawn()?;
        let console = q.take_console().map(|mut out| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).replace('\r', "")
            })
        });
        let status = q.wait_until(start + timeout);
        let timed_out = status.is_none();
        let status = status.or_else(|| {
            q.kill();
            q.try_wait()
        });
        Ok(Captured {
            verdict: status.map_or(ExitVerdict::Killed, ExitVerdict::from_status),
            console: console.and_then(|h| h.join().ok()).unwrap_or_default(),
            stderr: q.stderr_after_exit(),
            timed_out,
            elapsed: start.elapsed(),
        })
    }
}

impl QemuProcess {
    /// Starts `cmd` (a QEMU; `command_line` says it in messages) with its streams as `io`
    /// says.
    pub fn spawn_command(
        mut cmd: Command,
        command_line: String,
        io: QemuIo,
    ) -> Result<QemuProcess, QemuError> {
        let binary = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(match io.stdin {
            QemuInput::Null => Stdio::null(),
            QemuInput::Piped => Stdio::piped(),
            QemuInput::Inherit => Stdio::inherit(),
        })
        .stdout(match io.stdout {
            QemuOutput::Null => Stdio::null(),
            QemuOutput::Piped => Stdio::piped(),
            QemuOutput::Inherit => Stdio::inherit(),
        })
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|source| QemuError::Spawn { binary, source })?;
        let console = child.stdout.take();
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = child.stderr.take().map(|mut pipe| {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if io.echo_stderr {
                        let mut e = std::io::stderr().lock();
                        let _ = e.write_all(&buf[..n]);
                        let _ = e.flush();
                    }
                    let mut s = lock(&sink);
                    if s.len() < MAX_STDERR {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            })
        });
        Ok(QemuProcess {
            child: Mutex::new(child),
            console: Mutex::new(console),
            stdin: Mutex::new(stdin),
            stderr,
            stderr_reader: Mutex::new(stderr_reader),
            command_line,
        })
    }

    /// QEMU's stdin, once, when it is [`QemuInput::Piped`].
    pub fn take_stdin(&self) -> Option<ChildStdin> {
        lock(&self.stdin).take()
    }

    /// The guest console (QEMU's stdout), once; `None` unless the console is
    /// [`Console::Stdio`].
    pub fn take_console(&self) -> Option<Box<dyn Read + Send>> {
        lock(&self.console)
            .take()
            .map(|c| Box::new(c) as Box<dyn Read + Send>)
    }

    /// The process id, to signal QEMU from outside.
    pub fn id(&self) -> u32 {
        lock(&self.child).id()
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().ok().flatten()
    }

    /// Waits for QEMU to exit until `deadline`; `None` if it still runs then.
    pub fn wait_until(&self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// True while QEMU runs.
    pub fn is_alive(&self) -> bool {
        self.try_wait().is_none()
    }

    /// What QEMU printed on stderr so far, trimmed.
    pub fn stderr_text(&self) -> String {
        lock(&self.stderr).trim().to_string()
    }

    /// Everything QEMU printed on stderr, once it has exited (its stderr is then at its end).
    pub fn stderr_after_exit(&self) -> String {
        if self.try_wait().is_some() {
            if let Some(reader) = lock(&self.stderr_reader).take() {
                let _ = reader.join();
            }
        }
        self.stderr_text()
    }

    /// Kills QEMU if it still runs, and reaps it.
    pub fn kill(&self) {
        let mut c = lock(&self.child);
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A finished run with its console captured.
#[derive(Clone, Debug)]
pub struct Captured {
    pub verdict: ExitVerdict,
    /// Everything QEMU wrote to stdout (the guest console), lossily decoded, `\r` removed.
    pub console: String,
    /// What QEMU wrote to stderr (its own warnings and errors).
    pub stderr: String,
    /// True when the run was killed for exceeding the timeout.
    pub timed_out: bool,
    pub elapsed: Duration,
}
