//! Docker: pausing a container while its data directory (bind-mounted from the host, as the
//! RPGer stack keeps everything under /data2/rpger) is read, and unpausing it on every path.
//!
//! bollard is async; this module owns a small current-thread tokio runtime and exposes blocking
//! calls, so async does not spread into the engine. The unpause is guaranteed like
//! [`super::freeze`]'s resume: besides unpausing on drop, a watchdog — this very binary re-run
//! with [`WATCHDOG_ARG`], in its own process group, armed before the pause — unpauses the
//! container when the pipe from us closes, however we exit (SIGKILL included).

use super::freeze::Watchdog;
use crate::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::process::Command;

/// First argument that makes the binary run [`run_watchdog`] instead of its normal CLI.
pub const WATCHDOG_ARG: &str = "__rpger-store-unpause-watchdog";

/// A connection to the local Docker engine.
pub struct Docker {
    rt: tokio::runtime::Runtime,
    api: bollard::Docker,
}

impl Docker {
    /// Connects to the local engine (`$DOCKER_HOST` or /var/run/docker.sock) and pings it.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] when no engine answers.
    pub fn connect() -> Result<Docker> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::with_cause(ErrorKind::Io, "cannot start the Docker client runtime", e))?;
        let api = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| Error::with_cause(ErrorKind::Missing, "cannot reach the Docker engine", e))?;
        rt.block_on(api.ping()).map_err(|e| Error::with_cause(ErrorKind::Missing, "the Docker engine does not answer", e))?;
        Ok(Docker { rt, api })
    }

    /// (running, paused) of a container.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] when there is no such container.
    pub fn state(&self, name: &str) -> Result<(bool, bool)> {
        let r = self
            .rt
            .block_on(self.api.inspect_container(name, None))
            .map_err(|e| Error::with_cause(ErrorKind::Missing, format!("container {name}"), e))?;
        let s = r.state.unwrap_or_default();
        Ok((s.running.unwrap_or(false), s.paused.unwrap_or(false)))
    }

    /// Pauses a container (freezes every process in it).
    ///
    /// # Errors
    /// The engine's refusal, naming the container.
    pub fn pause(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(self.api.pause_container(name))
            .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot pause container {name}"), e))
    }

    /// Unpauses a container.
    ///
    /// # Errors
    /// The engine's refusal, naming the container.
    pub fn unpause(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(self.api.unpause_container(name))
            .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot unpause container {name}"), e))
    }
}

/// A paused container; unpaused when dropped (or when this process dies).
pub struct Paused {
    docker: Docker,
    name: String,
    // Dropped after `Paused::drop` has unpaused the container itself.
    _watchdog: Watchdog,
}

/// Pauses `name` after arming the watchdog. The container must be running and not paused.
///
/// # Errors
/// No engine, no such container, a container that is not running or already paused (someone
/// else's pause: we would unpause it behind their back), or the engine refusing.
pub fn pause(name: &str) -> Result<Paused> {
    let docker = Docker::connect()?;
    match docker.state(name)? {
        (true, false) => {}
        (_, true) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("container {name} is already paused; refusing to take over someone else's pause"),
            ))
        }
        (false, _) => return Err(Error::new(ErrorKind::InvalidInput, format!("container {name} is not running"))),
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::with_cause(ErrorKind::Io, "cannot find this program to arm the unpause watchdog", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg(WATCHDOG_ARG).arg(name);
    let paused = Paused { docker, name: name.to_string(), _watchdog: Watchdog::arm(cmd)? };
    paused.docker.pause(name)?;
    Ok(paused)
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = self.docker.unpause(&self.name);
    }
}

/// The watchdog: waits until stdin closes (the backup ended, in any way), then unpauses
/// `name` if it is still paused.
pub fn run_watchdog(name: &str) -> i32 {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    match Docker::connect().and_then(|d| match d.state(name)? {
        (_, true) => d.unpause(name),
        _ => Ok(()),
    }) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}
