//! Where the control plane's programs are: `$VX11_CONTROLPLANE_BIN`, or the cache that
//! `tests/controlplane/build.sh` fills (and builds on first use).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Error, Result};

/// Names a directory holding `vx11-controlplane` and `helm`; when set, nothing is built.
pub const BIN_DIR_ENV: &str = "VX11_CONTROLPLANE_BIN";

/// The build script, in this crate's source tree.
pub const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/controlplane/build.sh");

/// The programs a control plane runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Uses `$VX11_CONTROLPLANE_BIN` if set; otherwise runs the build script (once per process;
    /// it answers from its cache in well under a second when nothing changed).
    pub fn locate() -> Result<Self> {
        static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
        let dir = FOUND
            .get_or_init(|| match std::env::var_os(BIN_DIR_ENV) {
                Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
                _ => run_build_script(),
            })
            .clone()
            .map_err(Error::Binaries)?;
        Self::in_dir(dir)
    }

    /// Uses the programs in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let binaries = Self { dir: dir.into() };
        for program in [binaries.controlplane(), binaries.helm()] {
            if !program.is_file() {
                return Err(Error::Binaries(format!(
                    "{} is missing (build it with `bash {BUILD_SCRIPT}`, or point {BIN_DIR_ENV} at a directory that has it)",
                    program.display()
                )));
            }
        }
        Ok(binaries)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The multi-call program: `etcd`, `kube-apiserver`, `kube-controller-manager`.
    pub fn controlplane(&self) -> PathBuf {
        self.dir.join("vx11-controlplane")
    }

    /// Another program of the bin directory: `coredns`, `kube-router`, `vx11-pause`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn helm(&self) -> PathBuf {
        self.dir.join("helm")
    }
}

fn run_build_script() -> std::result::Result<PathBuf, String> {
    run_script_for_path(BUILD_SCRIPT, &[])
        .map_err(|e| format!("{e}. Set {BIN_DIR_ENV} to use binaries built elsewhere."))
}

/// Runs one of the repo's build scripts, whose progress goes to stderr (shown by the test
/// harness on failure) and whose last line of stdout is the path it made.
pub(crate) fn run_script_for_path(
    script: &str,
    args: &[String],
) -> std::result::Result<PathBuf, String> {
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{script} {} failed ({}); its messages are above",
            args.join(" "),
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| format!("{script} printed no path"))
}
