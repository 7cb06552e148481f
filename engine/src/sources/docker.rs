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
        let (rt, api) = client()?;
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

    /// Whether the container was started with `--rm`: stopping it deletes it.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] when there is no such container.
    pub fn auto_removed(&self, name: &str) -> Result<bool> {
        let r = self
            .rt
            .block_on(self.api.inspect_container(name, None))
            .map_err(|e| Error::with_cause(ErrorKind::Missing, format!("container {name}"), e))?;
        Ok(r.host_config.and_then(|h| h.auto_remove).unwrap_or(false))
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

    /// Stops a running container: SIGTERM, then SIGKILL after `grace` (the database's own
    /// shutdown: Redis saves, SQLite closes). A manual stop also keeps a restart policy from
    /// starting it again behind our back.
    ///
    /// # Errors
    /// The engine's refusal, naming the container.
    pub fn stop(&self, name: &str, grace: std::time::Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = bollard::query_parameters::StopContainerOptionsBuilder::default().t(t).build();
        self.rt
            .block_on(self.api.stop_container(name, Some(opts)))
            .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot stop container {name}"), e))
    }

    /// Starts a stopped container.
    ///
    /// # Errors
    /// The engine's refusal, naming the container.
    pub fn start(&self, name: &str) -> Result<()> {
        self.rt
            .block_on(self.api.start_container(name, None))
            .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot start container {name}"), e))
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

/// A current-thread runtime and a client of the local engine (`$DOCKER_HOST` or the socket).
fn client() -> Result<(tokio::runtime::Runtime, bollard::Docker)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::with_cause(ErrorKind::Io, "cannot start the Docker client runtime", e))?;
    let api = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| Error::with_cause(ErrorKind::Missing, "cannot reach the Docker engine", e))?;
    Ok((rt, api))
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

/// First argument that makes the binary run [`run_remove_watchdog`]: a temporary container is
/// removed when the pipe from us closes, however we exit.
pub const REMOVE_WATCHDOG_ARG: &str = "__rpger-store-remove-watchdog";

/// A container started for a test (e.g. a restored dump loaded by the production image);
/// removed, with its anonymous volumes, when dropped or when this process dies.
pub struct Temporary {
    docker: Docker,
    name: String,
    // Dropped after `Temporary::drop` has removed the container itself.
    _watchdog: Watchdog,
}

/// Starts a container named `name` from the local `image` with `entrypoint` and `cmd`, and
/// `binds` (`HOSTPATH:CONTAINERPATH[:ro]`). The removal watchdog is armed before it is created.
///
/// # Errors
/// No engine, an image that is not there (none is pulled), a name taken, the engine's refusal.
pub fn run_temporary(name: &str, image: &str, entrypoint: Vec<String>, cmd: Vec<String>, binds: Vec<String>) -> Result<Temporary> {
    let docker = Docker::connect()?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::with_cause(ErrorKind::Io, "cannot find this program to arm the container removal watchdog", e))?;
    let mut wd = Command::new(exe);
    wd.arg(REMOVE_WATCHDOG_ARG).arg(name);
    let t = Temporary { docker, name: name.to_string(), _watchdog: Watchdog::arm(wd)? };
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(entrypoint),
        cmd: Some(cmd),
        labels: Some([("rpger-store".to_string(), "test-restore".to_string())].into()),
        host_config: Some(bollard::models::HostConfig { binds: Some(binds), ..Default::default() }),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default().name(name).build();
    let d = &t.docker;
    d.rt.block_on(d.api.create_container(Some(opts), body))
        .map_err(|e| Error::with_cause(ErrorKind::Missing, format!("cannot create a container {name} from image {image}"), e))?;
    d.start(name)?;
    Ok(t)
}

impl Temporary {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it still runs.
    ///
    /// # Errors
    /// The engine does not answer.
    pub fn running(&self) -> Result<bool> {
        Ok(self.docker.state(&self.name)?.0)
    }

    /// The last `lines` lines it printed (both streams).
    pub fn log_text(&self, lines: usize) -> String {
        use futures_util::StreamExt;
        let opts = bollard::query_parameters::LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let d = &self.docker;
        d.rt.block_on(async {
            let mut s = std::pin::pin!(d.api.logs(&self.name, Some(opts)));
            let mut text = String::new();
            while let Some(Ok(item)) = s.next().await {
                text.push_str(&String::from_utf8_lossy(&item.into_bytes()));
            }
            text
        })
    }

    /// The container's address on its first network.
    ///
    /// # Errors
    /// As [`address`].
    pub fn address(&self) -> Result<String> {
        address(&self.name)
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = remove(&self.docker, &self.name);
    }
}

fn remove(d: &Docker, name: &str) -> Result<()> {
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    d.rt.block_on(d.api.remove_container(name, Some(opts)))
        .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot remove container {name}"), e))
}

/// The removal watchdog: waits until stdin closes, then removes container `name` if it is
/// still there.
pub fn run_remove_watchdog(name: &str) -> i32 {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    match Docker::connect() {
        Ok(d) if d.state(name).is_ok() => i32::from(remove(&d, name).is_err()),
        _ => 0,
    }
}

/// Bytes coming out of the Docker engine (an exec's standard output, a tar archive of a
/// container path), read synchronously. A thread with its own runtime and its own connection
/// drives the request and hands the bytes over a small bounded channel, so a slow consumer
/// holds the producer back instead of buffering the stream in memory.
pub struct EngineReader {
    rx: std::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, String>>,
    cur: bytes::Bytes,
}

impl Read for EngineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.cur = b,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0), // the request ended; how it ended is `EngineTask::finish`'s
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// The request behind an [`EngineReader`] or [`EngineWriter`]; `finish` tells whether it
/// succeeded (and, for a command fed through an [`EngineWriter`], what it printed last).
pub struct EngineTask<T = ()> {
    what: String,
    worker: std::thread::JoinHandle<Result<T>>,
}

impl<T> EngineTask<T> {
    /// Waits for the request to end (drop the reader first, or read it to the end). For an
    /// exec, success means the command exited 0.
    ///
    /// # Errors
    /// A non-zero exit (with the tail of its stderr), a cut connection, the engine's refusal.
    pub fn finish(self) -> Result<T> {
        self.worker.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, format!("{}: the Docker client thread panicked", self.what))))
    }

    /// What runs, for messages: e.g. "`mongodump --archive` in container rpger-mongodb".
    pub fn what(&self) -> &str {
        &self.what
    }
}

type Chunks = std::sync::mpsc::SyncSender<std::result::Result<bytes::Bytes, String>>;

/// Runs `job` on a new thread with its own runtime and engine connection.
fn spawn_engine<F, Fut>(what: String, job: F) -> Result<(EngineReader, EngineTask)>
where
    F: FnOnce(bollard::Docker, Chunks, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    // Eight 1 MiB frames in flight at most.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let w = what.clone();
    let worker = std::thread::Builder::new()
        .name("docker-stream".into())
        .spawn(move || {
            let (rt, api) = client()?;
            rt.block_on(job(api, tx, w))
        })
        .map_err(|e| Error::with_cause(ErrorKind::Io, "cannot start the Docker client thread", e))?;
    Ok((EngineReader { rx, cur: bytes::Bytes::new() }, EngineTask { what, worker }))
}

fn aborted(what: &str) -> Error {
    Error::new(ErrorKind::Interrupted, format!("{what}: stopped reading (the backup of this source failed)"))
}

/// Checks that `container` exists and runs unpaused (an exec into a paused one would hang).
fn require_running(container: &str) -> Result<()> {
    match Docker::connect()?.state(container)? {
        (true, false) => Ok(()),
        (_, true) => Err(Error::new(ErrorKind::InvalidInput, format!("container {container} is paused"))),
        (false, _) => Err(Error::new(ErrorKind::InvalidInput, format!("container {container} is not running"))),
    }
}

/// Runs `argv` in `container` (no TTY, so stdout arrives byte-exact, separate from stderr) and
/// streams its standard output. `env` entries (`KEY=value`) are set for the command only and
/// never appear in messages.
///
/// # Errors
/// No engine, no such container, a container that is not running; the command's own failure
/// is reported by [`EngineTask::finish`].
pub fn exec(container: &str, argv: Vec<String>, env: Vec<String>) -> Result<(EngineReader, EngineTask)> {
    use bollard::container::LogOutput;
    use futures_util::StreamExt;
    require_running(container)?;
    let what = format!("`{}` in container {container}", argv.join(" "));
    let container = container.to_string();
    spawn_engine(what, move |api, tx, what| async move {
        let engine_err = |e: bollard::errors::Error| Error::with_cause(ErrorKind::Io, what.clone(), e);
        let (id, mut output, _) = attach_exec(&api, &container, argv, env, false, &what).await?;
        let mut err_tail: Vec<u8> = vec![];
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) => {
                    if tx.send(Ok(message)).is_err() {
                        return Err(aborted(&what));
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    err_tail.extend_from_slice(&message);
                    let cut = err_tail.len().saturating_sub(2000);
                    err_tail.drain(..cut);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{what}: stream cut: {e}")));
                    return Err(engine_err(e));
                }
            }
        }
        drop(tx);
        let (code, tail) = exit_status(&api, &id, &err_tail).await.map_err(engine_err)?;
        let tail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        match code {
            Some(0) => Ok(()),
            Some(c) => Err(Error::new(ErrorKind::InvalidInput, format!("{what} exited with status {c}; nothing is committed{tail}"))),
            None => Err(Error::new(ErrorKind::InvalidInput, format!("{what}: no exit status (still running?){tail}"))),
        }
    })
}

type ExecOutput =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>> + Send>>;
type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Creates and starts an exec of `argv` in `container`, attached without a TTY (so stdout
/// arrives byte-exact, apart from stderr), with its standard input when `stdin`; returns its
/// id, its output and its input.
async fn attach_exec(
    api: &bollard::Docker,
    container: &str,
    argv: Vec<String>,
    env: Vec<String>,
    stdin: bool,
    what: &str,
) -> Result<(String, ExecOutput, ExecInput)> {
    use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
    let engine_err = |e: bollard::errors::Error| Error::with_cause(ErrorKind::Io, what.to_string(), e);
    let opts = CreateExecOptions {
        cmd: Some(argv),
        env: Some(env),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        ..Default::default()
    };
    let id = api.create_exec(container, opts).await.map_err(engine_err)?.id;
    let start = StartExecOptions { detach: false, tty: false, output_capacity: Some(1 << 20) };
    match api.start_exec(&id, Some(start)).await.map_err(engine_err)? {
        StartExecResults::Attached { output, input } => Ok((id, output, input)),
        StartExecResults::Detached => Err(Error::new(ErrorKind::Io, format!("{what}: the engine did not attach to the command"))),
    }
}

/// An exec's exit status once its output has ended (the exit may lag a little behind; after
/// 30 s without one, `None`), and the tail of what it printed on one line.
async fn exit_status(
    api: &bollard::Docker,
    id: &str,
    printed: &[u8],
) -> std::result::Result<(Option<i64>, String), bollard::errors::Error> {
    let t0 = std::time::Instant::now();
    let code = loop {
        let r = api.inspect_exec(id).await?;
        if r.running != Some(true) || t0.elapsed() > std::time::Duration::from_secs(30) {
            break r.exit_code;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok((code, String::from_utf8_lossy(printed).trim().replace('\n', " | ")))
}

/// Streams `path` of `container` as the engine's tar archive (GET /containers/{id}/archive);
/// works on a paused container, which is how a consistent copy is taken.
///
/// # Errors
/// No engine or no such container; a missing path is reported by [`EngineTask::finish`] (and
/// the reader ends early).
pub fn download(container: &str, path: &str) -> Result<(EngineReader, EngineTask)> {
    use futures_util::StreamExt;
    Docker::connect()?.state(container)?;
    let what = format!("{path} in container {container}");
    let (container, path) = (container.to_string(), path.to_string());
    spawn_engine(what, move |api, tx, what| async move {
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(&path).build();
        let mut s = std::pin::pin!(api.download_from_container(&container, Some(opts)));
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => {
                    if tx.send(Ok(b)).is_err() {
                        return Err(aborted(&what));
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{what}: {e}")));
                    return Err(Error::with_cause(ErrorKind::Missing, format!("cannot copy {what}"), e));
                }
            }
        }
        Ok(())
    })
}

/// Bytes going into the Docker engine (a tar archive to unpack in a container, a command's
/// standard input), written synchronously. Like [`EngineReader`] the other way round: a thread
/// with its own runtime drives the request and takes 1 MiB frames from a bounded channel, so
/// memory stays flat whatever is written.
pub struct EngineWriter {
    tx: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    buf: Vec<u8>,
}

const FRAME: usize = 1 << 20;

impl EngineWriter {
    /// Sends what is buffered and closes the stream (the archive or the standard input ends);
    /// then [`EngineTask::finish`] tells how the request ended.
    ///
    /// # Errors
    /// The request ended before taking everything.
    pub fn close(mut self) -> std::io::Result<()> {
        self.send()?;
        self.tx = None;
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME)));
        match &self.tx {
            Some(tx) if tx.blocking_send(frame).is_ok() => Ok(()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the Docker engine stopped taking the stream")),
        }
    }
}

impl std::io::Write for EngineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() >= FRAME {
            self.send()?;
        }
        let n = data.len().min(FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

type Frames = tokio::sync::mpsc::Receiver<bytes::Bytes>;

/// Runs `job` on a new thread with its own runtime and engine connection, fed by the returned
/// writer.
fn spawn_engine_fed<T, F, Fut>(what: String, job: F) -> Result<(EngineWriter, EngineTask<T>)>
where
    T: Send + 'static,
    F: FnOnce(bollard::Docker, Frames, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let w = what.clone();
    let worker = std::thread::Builder::new()
        .name("docker-feed".into())
        .spawn(move || {
            let (rt, api) = client()?;
            rt.block_on(job(api, rx, w))
        })
        .map_err(|e| Error::with_cause(ErrorKind::Io, "cannot start the Docker client thread", e))?;
    Ok((EngineWriter { tx: Some(tx), buf: Vec::with_capacity(FRAME) }, EngineTask { what, worker }))
}

fn frames(rx: Frames) -> impl futures_util::Stream<Item = bytes::Bytes> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// Unpacks the tar archive written to the returned writer into `dir` of `container` (PUT
/// /containers/{id}/archive), which may be stopped. Entries keep the owners, modes and times
/// their headers carry; files already there with other names are left alone.
///
/// # Errors
/// No engine or no such container; the engine's refusal (a missing directory, a full disk) is
/// reported by [`EngineTask::finish`].
pub fn upload(container: &str, dir: &str) -> Result<(EngineWriter, EngineTask)> {
    Docker::connect()?.state(container)?;
    let what = format!("{dir} in container {container}");
    let (container, dir) = (container.to_string(), dir.to_string());
    spawn_engine_fed(what, move |api, rx, what| async move {
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default().path(&dir).build();
        api.upload_to_container(&container, Some(opts), bollard::body_stream(frames(rx)))
            .await
            .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot write {what}"), e))
    })
}

/// Runs `argv` in `container` with the returned writer as its standard input (closed by
/// [`EngineWriter::close`]). [`EngineTask::finish`] gives the last lines it printed (both
/// streams) when it exits 0.
///
/// # Errors
/// No engine, no such container, a container that is not running; the command's own failure
/// (with the tail of what it printed) comes from [`EngineTask::finish`].
pub fn exec_fed(container: &str, argv: Vec<String>, env: Vec<String>) -> Result<(EngineWriter, EngineTask<String>)> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    require_running(container)?;
    let what = format!("`{}` in container {container}", argv.join(" "));
    let container = container.to_string();
    spawn_engine_fed(what, move |api, mut rx, what| async move {
        let engine_err = |e: bollard::errors::Error| Error::with_cause(ErrorKind::Io, what.clone(), e);
        let (id, mut output, mut input) = attach_exec(&api, &container, argv, env, true, &what).await?;
        let feed = async {
            while let Some(b) = rx.recv().await {
                input.write_all(&b).await?;
            }
            input.shutdown().await
        };
        let drain = async {
            let mut tail: Vec<u8> = vec![];
            while let Some(Ok(item)) = output.next().await {
                tail.extend_from_slice(&item.into_bytes());
                let cut = tail.len().saturating_sub(2000);
                tail.drain(..cut);
            }
            tail
        };
        let (fed, tail) = futures_util::future::join(feed, drain).await;
        let (code, tail) = exit_status(&api, &id, &tail).await.map_err(engine_err)?;
        let said = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        match (code, fed) {
            (Some(0), Ok(())) => Ok(tail),
            (Some(0), Err(e)) => Err(Error::with_cause(ErrorKind::Io, format!("{what} exited 0 before reading all its input{said}"), e)),
            (Some(c), _) => Err(Error::new(ErrorKind::InvalidInput, format!("{what} exited with status {c}{said}"))),
            (None, _) => Err(Error::new(ErrorKind::InvalidInput, format!("{what}: no exit status (still running?){said}"))),
        }
    })
}

/// Runs `run` with the arguments that give a MongoDB tool (`mongodump`, `mongorestore`) the URI
/// in `$RPGER_MONGODB_URI`, credentials included: a `--config` file written into the container
/// for the run only, so they never appear on a command line, and removed afterwards (emptied
/// where the image has no `rm`). Without the variable, no arguments.
///
/// # Errors
/// `run`'s error; the config file that could not be written, or not removed nor emptied.
pub fn with_mongo_uri<T>(container: &str, tool: &str, run: impl FnOnce(Vec<String>) -> Result<T>) -> Result<T> {
    let uri = std::env::var("RPGER_MONGODB_URI").unwrap_or_default();
    if uri.is_empty() {
        return run(vec![]);
    }
    let name = format!("rpger-store-{tool}-{}-{}.yaml", std::process::id(), crate::store::now_ns());
    upload_file(container, "/tmp", &name, format!("uri: {}\n", yaml_quoted(&uri)).as_bytes())?;
    let f = format!("/tmp/{name}");
    let res = run(vec![format!("--config={f}")]);
    let removed = exec(container, vec!["rm".into(), "-f".into(), f.clone()], vec![])
        .and_then(|(mut r, t)| {
            std::io::copy(&mut r, &mut std::io::sink()).ok();
            t.finish()
        })
        .is_ok();
    if !removed {
        upload_file(container, "/tmp", &name, b"")
            .map_err(|e| e.context(format!("cannot remove or empty the credentials file {f} in container {container}")))?;
    }
    res
}

/// `s` as a YAML double-quoted scalar.
fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes one file into `container` at `dir/name` (mode 0600), through a tar upload.
///
/// # Errors
/// No engine, no such container or directory, the engine's refusal.
pub fn upload_file(container: &str, dir: &str, name: &str, content: &[u8]) -> Result<()> {
    let d = Docker::connect()?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    let what = format!("{dir}/{name} in container {container}");
    tar.append_data(&mut h, name, content).map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot write {what}"), e))?;
    let body = tar.into_inner().map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot write {what}"), e))?;
    let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default().path(dir).build();
    d.rt.block_on(d.api.upload_to_container(container, Some(opts), bollard::body_full(body.into())))
        .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot write {what}"), e))
}

/// The container's address on its first network, to reach a server in it from this host.
///
/// # Errors
/// No engine, no such container, or a container without an address (network mode none/host).
pub fn address(container: &str) -> Result<String> {
    let d = Docker::connect()?;
    let r =
        d.rt.block_on(d.api.inspect_container(container, None))
            .map_err(|e| Error::with_cause(ErrorKind::Missing, format!("container {container}"), e))?;
    let nets = r.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let mut addrs: Vec<(String, String)> =
        nets.into_iter().filter_map(|(net, e)| e.ip_address.filter(|a| !a.is_empty()).map(|a| (net, a))).collect();
    addrs.sort();
    addrs.into_iter().next().map(|(_, a)| a).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, format!("container {container} has no network address (network mode none or host?)"))
    })
}
