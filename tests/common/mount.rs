//! `huds mount` processes for tests: started, waited for, and always unmounted.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::huds;

/// How long a mount may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Lazily unmounts whatever is on a directory when dropped, whether the test passed or not.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `huds mount`: killed and lazily unmounted when dropped.
pub struct Mounted {
    pub child: Option<Child>,
    pub stderr: mpsc::Receiver<String>,
    unmount: Option<Unmount>,
}

impl Mounted {
    /// Starts `huds --data HOME [EXTRA...] mount TARGET DIR` and waits for its "mounted" line.
    pub fn start(home: &Path, extra: &[&str], target: &str, dir: &Path) -> Mounted {
        Self::start_with(home, extra, &[target], dir)
    }

    /// Starts `huds --data HOME [EXTRA...] mount [ARGS...] DIR` and waits for its "mounted" line.
    pub fn start_with(home: &Path, extra: &[&str], args: &[&str], dir: &Path) -> Mounted {
        let mut child = Command::new(huds())
            .arg("--data")
            .arg(home)
            .args(extra)
            .arg("mount")
            .args(args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("huds mount runs");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (line_tx, line_rx) = mpsc::sync_channel(64);
        std::thread::spawn(move || {
            // Read to the end whether or not anyone still listens, so the mount never writes into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut all);
            let _ = err_tx.send(all);
        });
        let mut m = Mounted {
            child: Some(child),
            stderr: err_rx,
            unmount: Some(Unmount(dir.to_path_buf())),
        };
        match line_rx.recv_timeout(READY_WITHIN) {
            Ok(line) if line.starts_with("mounted ") => m,
            other => {
                let err = m.finish_stderr();
                panic!("huds mount did not say it mounted ({other:?}): {err}");
            }
        }
    }

    /// Kills the process and returns what it wrote on standard error.
    pub fn finish_stderr(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let child = self.child.as_ref().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    /// Waits for the process to exit, up to 30 s; `None` if it is still running.
    pub fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.term();
        self.exited(Duration::from_secs(30))
            .expect("huds mount exits within 30 s of SIGTERM")
    }

    /// Kills the process with SIGKILL, leaving its mount behind (the caller holds an [`Unmount`] of its own).
    pub fn kill_9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        std::mem::forget(self.unmount.take());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Then `unmount` drops: whatever is left on the directory is cleared.
    }
}

pub fn mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = std::path::absolute(dir).expect("absolute");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        // (mountinfo writes a space as \040; test paths hold no other escaped byte)
        .any(|p| Path::new(&p.replace("\\040", " ")) == dir)
}
