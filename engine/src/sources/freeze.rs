//! Freezing a writer (Chroma's server) while its files are copied: SIGSTOP, copy, SIGCONT — and
//! SIGCONT on every path. Besides resuming on drop, a watchdog process started *before* the stop
//! holds the read end of a pipe whose write end only we hold; when we exit in any way (an error,
//! Ctrl-C, even SIGKILL) the kernel closes it and the watchdog resumes the server. The watchdog
//! runs in its own process group, so a Ctrl-C on the terminal does not kill it too.

use crate::error::{Error, ErrorKind, Result};
use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A helper process that does its job (resume, unpause) when its stdin reaches EOF: when we drop
/// it, or when the kernel closes our end because we died in any way. Its own process group keeps
/// a terminal's Ctrl-C from killing it along with us.
pub(crate) struct Watchdog(Child);

impl Watchdog {
    /// Starts `cmd` as a watchdog.
    pub(crate) fn arm(mut cmd: Command) -> Result<Watchdog> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        cmd.spawn().map(Watchdog).map_err(|e| Error::with_cause(ErrorKind::Io, "cannot start the resume watchdog", e))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // EOF: it does its (by now harmless) job and exits
        let _ = self.0.wait();
    }
}

/// A stopped process; resumed when dropped (or when this process dies).
pub struct Frozen {
    pid: Pid,
    // Dropped after `Frozen::drop` has resumed the process itself.
    _watchdog: Watchdog,
}

/// Stops process `pid` (after arming the watchdog).
///
/// # Errors
/// [`ErrorKind::Missing`] when there is no such process; I/O errors starting the watchdog or
/// sending the signal.
pub fn freeze(pid: i32) -> Result<Frozen> {
    let p = Pid::from_raw(pid).ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("invalid pid {pid}")))?;
    test_kill_process(p)
        .map_err(|e| Error::with_cause(ErrorKind::Missing, format!("cannot signal process {pid} (is it running, and ours to stop?)"), e))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("read _ignored; kill -CONT {pid}"));
    let frozen = Frozen { pid: p, _watchdog: Watchdog::arm(cmd)? };
    kill_process(p, Signal::STOP).map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot stop process {pid}"), e))?;
    Ok(frozen)
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill_process(self.pid, Signal::CONT);
    }
}

/// The state letter of `/proc/PID/stat` (`T` = stopped), for tests and checks.
pub fn process_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}
