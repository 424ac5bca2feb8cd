//! Child processes of a control plane: started with their output in a log file, stopped on
//! drop, and killed by the kernel if this process dies first.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::{Error, Result};

/// A running child process whose stdout and stderr go to `log`.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command`, appending its output to `log`.
    ///
    /// The child gets `VX11_PARENT_PID`: `vx11-controlplane` then asks the kernel (prctl
    /// `PR_SET_PDEATHSIG`) to kill it when its parent dies, so a test run that is killed leaves
    /// nothing behind. The kernel means the parent *thread*, hence [`spawn_from_lasting_thread`].
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        command
            .env("VX11_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_from_lasting_thread(command)
            .map_err(|e| Error::io(format!("starting {name}"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(self.startup_error(format!("exited with {status}"))),
        }
    }

    pub fn startup_error(&self, reason: String) -> Error {
        Error::Startup {
            component: self.name.clone(),
            reason,
            log: self.log.clone(),
            log_tail: tail(&self.log, 40),
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // Errors mean the process is gone already.
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` from one thread that lives as long as this process.
///
/// `PR_SET_PDEATHSIG` fires when the thread that forked the child exits, not the process: a
/// child spawned from a test thread, a tokio worker or a `spawn_blocking` thread would be killed
/// as soon as that thread ends. Spawning every child from one thread that never ends ties the
/// children's lives to the process instead.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("vx11-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the process-spawning thread: {e}"));
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?
}

/// The last `lines` lines of a log file (at most the last 64 KiB of it).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
