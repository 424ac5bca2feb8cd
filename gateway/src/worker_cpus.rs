//! `VX11_WORKER_CPUS`: each worker on a CPU of its own, and each new connection handed to
//! the worker on the CPU where its handshake arrived.
//!
//! With `auto`, worker `i` runs only on the `i`-th CPU this process may run on, and its
//! listener says so to the kernel (`SO_INCOMING_CPU`; Linux 6.1 and later pick, among the
//! `SO_REUSEPORT` listeners of a port, the one whose CPU took the connection's SYN, and hash
//! as before when none did). A connection then stays on one CPU from its first packet:
//! the worker is woken on the CPU the kernel already works on, with the socket in that
//! CPU's cache. On the benchmark machine this was 7 % more requests/s with two workers,
//! with keep-alive and with a new connection per request (`docs/BENCHMARKS.md`).
//!
//! Off by default, as nginx's `worker_cpu_affinity` is: a pinned worker cannot move away
//! from a CPU something else keeps busy, so it is for CPUs the gateway has to itself (a
//! Kubernetes Guaranteed pod under the static CPU manager policy, or a machine of its own).
//! And connections follow the CPUs their packets arrive on: a network card spreads them by
//! hash as the kernel would, but a single local client process (on loopback) can put all
//! of its connections on one worker.

use std::fmt;

use vx11_service::{allowed_cpus, pin_current_thread};

/// What `VX11_WORKER_CPUS` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WorkerCpus {
    /// Workers run on any CPU; the kernel hashes new connections across them.
    #[default]
    Off,
    /// Worker `i` on the `i`-th CPU this process may run on; connections follow their CPU.
    Auto,
}

/// Why the workers cannot have a CPU each.
#[derive(Debug, thiserror::Error)]
pub enum WorkerCpusError {
    #[error(
        "VX11_WORKER_CPUS=auto gives each worker a CPU of its own, but VX11_WORKERS is {workers} and this process may run on {allowed} CPU(s) ({list}): set VX11_WORKERS to at most {allowed}, or VX11_WORKER_CPUS=off"
    )]
    TooFew {
        workers: usize,
        allowed: usize,
        list: CpuList,
    },
    #[error("VX11_WORKER_CPUS=auto: cannot read the CPUs this process may run on: {0}")]
    Affinity(std::io::Error),
}

/// CPU numbers as `taskset` and `/proc/<pid>/status` write them: `0,1,4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, cpu) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}

impl WorkerCpus {
    /// The CPU of each of `workers` workers (`None`: off): the first `workers` CPUs of the
    /// process's affinity mask (a cpuset or `taskset` narrows it). One worker is not kept
    /// on a CPU: there is no other worker to hand connections to, and kept on one CPU it
    /// only waits there while another is free (on the benchmark machine its p99 with
    /// keep-alive was 1.84 ms pinned against 1.64 free, `docs/BENCHMARKS.md`).
    pub fn assign(self, workers: usize) -> Result<Option<Vec<usize>>, WorkerCpusError> {
        match self {
            Self::Off => Ok(None),
            Self::Auto if workers < 2 => Ok(None),
            Self::Auto => {
                let allowed = allowed_cpus().map_err(WorkerCpusError::Affinity)?;
                assign_from(&allowed, workers).map(Some)
            }
        }
    }
}

fn assign_from(allowed: &[usize], workers: usize) -> Result<Vec<usize>, WorkerCpusError> {
    if workers > allowed.len() {
        return Err(WorkerCpusError::TooFew {
            workers,
            allowed: allowed.len(),
            list: CpuList(allowed.to_vec()),
        });
    }
    Ok(allowed[..workers].to_vec())
}

/// Keeps the calling worker on `cpu` from now on; the error names the setting.
pub fn pin_worker(cpu: usize) -> std::io::Result<()> {
    pin_current_thread(cpu).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot keep a worker on CPU {cpu} (VX11_WORKER_CPUS=auto): {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_the_next_allowed_cpu() {
        assert_eq!(assign_from(&[2, 3, 6, 7], 2).unwrap(), vec![2, 3]);
        assert_eq!(assign_from(&[0, 1], 2).unwrap(), vec![0, 1]);
    }

    #[test]
    fn more_workers_than_cpus_is_an_error_that_says_what_to_set() {
        let error = assign_from(&[0, 1], 3).unwrap_err().to_string();
        assert!(
            error.contains("VX11_WORKERS is 3")
                && error.contains("2 CPU(s) (0,1)")
                && error.contains("VX11_WORKER_CPUS=off"),
            "{error}"
        );
    }

    #[test]
    fn off_assigns_nothing() {
        assert_eq!(WorkerCpus::Off.assign(64).unwrap(), None);
    }

    #[test]
    fn auto_assigns_cpus_this_process_may_run_on() {
        let allowed = allowed_cpus().unwrap();
        if allowed.len() < 2 {
            return; // one CPU: two workers cannot have one each (the error is tested above)
        }
        let assigned = WorkerCpus::Auto.assign(2).unwrap().unwrap();
        assert_eq!(assigned, allowed[..2].to_vec());
    }

    #[test]
    fn auto_leaves_a_single_worker_free_to_run_on_any_cpu() {
        assert_eq!(WorkerCpus::Auto.assign(1).unwrap(), None);
    }

    #[test]
    fn a_worker_that_cannot_be_pinned_says_which_setting_asked() {
        let error = pin_worker(usize::MAX).unwrap_err().to_string();
        assert!(error.contains("VX11_WORKER_CPUS=auto"), "{error}");
    }
}
