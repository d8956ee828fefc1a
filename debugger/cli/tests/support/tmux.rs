//! A tmux server of the test's own, to run what users run in a real terminal.

use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), killed on drop.
pub struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    pub fn start(name: &str, command: &str) -> Tmux {
        Self::start_with(name, command, &[])
    }

    /// Starts the server with `env` added to its environment (the pane's shell inherits it).
    pub fn start_with(name: &str, command: &str, env: &[(&str, &std::ffi::OsStr)]) -> Tmux {
        let status = Command::new("tmux").arg("-V").status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "tmux is needed for this test: apt-get install tmux (cargo xtask test installs it)"
        );
        let t = Tmux {
            socket: format!("lockscope-test-{}-{name}", std::process::id()),
            session: name.to_string(),
        };
        let ok = t
            .cmd()
            .envs(env.iter().copied())
            .args(["new-session", "-d", "-s", name, "-x", "120", "-y", "36"])
            .arg(command)
            .status()
            .unwrap();
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        // The server it starts passes TMPDIR on: lockscope's temporary files go under target/.
        c.args(["-L", &self.socket])
            .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"));
        c
    }

    pub fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends tmux key names (`Enter`, `C-a`) or literal text.
    pub fn send(&self, keys: &str) {
        self.cmd()
            .args(["send-keys", "-t", &self.session, keys])
            .status()
            .unwrap();
    }

    pub fn alternate_screen(&self) -> bool {
        let out = self
            .cmd()
            .args([
                "display-message",
                "-p",
                "-t",
                &self.session,
                "#{alternate_on}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Waits until the screen satisfies `f`, returning it; fails with the last screen.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.capture();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}
