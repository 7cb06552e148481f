//! Redis on a plain host: `BGSAVE`, wait for it to finish, then back up `dump.rdb` (the
//! consistent restore point) and the AOF as it is (Redis 7's `appendonlydir/`, or
//! `appendonly.aof` on older versions), recording `INFO keyspace` in the snapshot.
//!
//! Talks RESP over TCP itself (no `redis-cli` needed). The password comes from the
//! `RPGER_REDIS_PASSWORD` environment variable, never from the command line.

use crate::error::{Error, ErrorKind, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the Redis server is and how long a save may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The server's data directory, when `CONFIG GET dir` is not allowed or not local.
    pub data_dir: Option<PathBuf>,
    /// Longest wait for `BGSAVE`.
    pub timeout: Duration,
}

impl RedisSpec {
    /// Parses `redis://HOST:PORT[?dir=/path][&timeout=SECS]`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming what is wrong.
    pub fn parse(s: &str) -> Result<RedisSpec> {
        let bad = |why: &str| {
            Error::new(ErrorKind::InvalidInput, format!("redis source {s:?}: {why} (expected redis://HOST:PORT[?dir=/data/dir])"))
        };
        let rest = s.strip_prefix("redis://").ok_or_else(|| bad("must start with redis://"))?;
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut spec = RedisSpec { host: host.to_string(), port, data_dir: None, timeout: Duration::from_secs(600) };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("dir", d)) if !d.is_empty() => spec.data_dir = Some(PathBuf::from(d)),
                Some(("timeout", t)) => spec.timeout = Duration::from_secs(t.parse().map_err(|_| bad("bad timeout"))?),
                _ => return Err(bad(&format!("unknown option {kv:?}"))),
            }
        }
        Ok(spec)
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) => String::new(),
            Reply::Array(a) => a.iter().map(|r| r.text()).collect::<Vec<_>>().join(" "),
        }
    }
}

/// The largest bulk reply accepted (INFO and CONFIG replies are small).
const MAX_BULK: i64 = 64 << 20;
const MAX_ARRAY: i64 = 1 << 16;

struct Conn {
    what: String,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(spec: &RedisSpec) -> Result<Conn> {
        let what = format!("redis {}:{}", spec.host, spec.port);
        let fail = |e: std::io::Error| Error::with_cause(ErrorKind::Missing, format!("cannot connect to {what}"), e);
        let addr = (spec.host.as_str(), spec.port)
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| fail(std::io::ErrorKind::NotFound.into()))?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(fail)?;
        let w = s.try_clone().map_err(fail)?;
        let mut c = Conn { what, r: BufReader::new(s), w };
        if let Ok(pw) = std::env::var("RPGER_REDIS_PASSWORD") {
            c.ok(&["AUTH", &pw])?;
        }
        Ok(c)
    }

    /// A server this process started itself on 127.0.0.1, with no password.
    fn open_own(port: u16) -> Result<Conn> {
        let what = format!("redis 127.0.0.1:{port}");
        let fail = |e: std::io::Error| Error::with_cause(ErrorKind::Missing, format!("cannot connect to {what}"), e);
        let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(fail)?;
        let w = s.try_clone().map_err(fail)?;
        Ok(Conn { what, r: BufReader::new(s), w })
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        let io = |e: std::io::Error| Error::with_cause(ErrorKind::Io, format!("{} ({})", self.what, args[0]), e);
        self.w.write_all(&req).map_err(io)?;
        let what = self.what.clone();
        read_reply(&mut self.r).map_err(|e| e.context(format!("{what} ({})", args[0])))
    }

    /// A command that must not fail.
    fn ok(&mut self, args: &[&str]) -> Result<Reply> {
        match self.call(args)? {
            Reply::Error(e) => Err(Error::new(ErrorKind::InvalidInput, format!("{}: {} failed: {e}", self.what, args[0]))),
            r => Ok(r),
        }
    }

    /// `CONFIG GET name`, or None when CONFIG is refused or the parameter does not exist.
    fn config(&mut self, name: &str) -> Result<Option<String>> {
        Ok(match self.call(&["CONFIG", "GET", name])? {
            Reply::Array(a) if a.len() == 2 => Some(a[1].text()),
            _ => None,
        })
    }

    fn info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        let text = self.ok(&["INFO", section])?.text();
        Ok(text.lines().filter_map(|l| l.trim().split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| Error::with_cause(ErrorKind::Io, "read reply", e))?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(Error::new(ErrorKind::Io, "connection closed or malformed reply"));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let num = |s: &str| s.parse::<i64>().map_err(|_| Error::new(ErrorKind::Io, format!("malformed reply length {s:?}")));
    match line[0] {
        b'+' => Ok(Reply::Simple(body)),
        b'-' => Ok(Reply::Error(body)),
        b':' => Ok(Reply::Int(num(&body)?)),
        b'$' => {
            let n = num(&body)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            if n > MAX_BULK {
                return Err(Error::new(ErrorKind::Io, format!("bulk reply of {n} bytes is too large")));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| Error::with_cause(ErrorKind::Io, "read reply", e))?;
            buf.truncate(n as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        b'*' => {
            let n = num(&body)?;
            if n > MAX_ARRAY {
                return Err(Error::new(ErrorKind::Io, format!("array reply of {n} items is too large")));
            }
            (0..n.max(0)).map(|_| read_reply(r)).collect::<Result<Vec<_>>>().map(Reply::Array)
        }
        _ => Err(Error::new(ErrorKind::Io, "malformed reply")),
    }
}

/// What a server holds: `(dbN, keys)` per database, and its version.
pub type Loaded = (Vec<(String, u64)>, String);

/// What a server this process started on 127.0.0.1:`port` answers: `Ok(None)` while it is not
/// up or still loading its data, then its `INFO keyspace` as `(dbN, keys)` and its version.
///
/// # Errors
/// A reply that is neither an answer nor "loading".
pub fn probe_own(port: u16) -> Result<Option<Loaded>> {
    let Ok(c) = Conn::open_own(port) else { return Ok(None) };
    probe_with(c)
}

/// [`probe_own`] for the server at `spec` (with `$RPGER_REDIS_PASSWORD` when set).
///
/// # Errors
/// A reply that is neither an answer nor "loading".
pub fn probe(spec: &RedisSpec) -> Result<Option<Loaded>> {
    let Ok(c) = Conn::open(spec) else { return Ok(None) };
    probe_with(c)
}

fn probe_with(mut c: Conn) -> Result<Option<Loaded>> {
    match c.call(&["PING"]) {
        Ok(Reply::Simple(p)) if p == "PONG" => {}
        Ok(Reply::Error(e)) if e.starts_with("LOADING") => return Ok(None),
        Err(_) => return Ok(None),
        Ok(other) => return Err(Error::new(ErrorKind::Corrupt, format!("{}: PING answered {:?}", c.what, other.text()))),
    }
    let keys = c.info("keyspace")?.into_iter().filter(|(k, _)| k.starts_with("db")).map(|(db, v)| (db, keys_of(&v).unwrap_or(0))).collect();
    let version = c.info("server")?.into_iter().find(|(k, _)| k == "redis_version").map(|(_, v)| v).unwrap_or_default();
    Ok(Some((keys, version)))
}

/// `CONFIG GET name` of the server at `spec`: `None` when CONFIG is refused (renamed or
/// disabled) or there is no such parameter.
///
/// # Errors
/// An unreachable server.
pub fn config_get(spec: &RedisSpec, name: &str) -> Result<Option<String>> {
    Conn::open(spec)?.config(name)
}

/// The `keys=N` of an `INFO keyspace` value such as `keys=3,expires=0,avg_ttl=0`.
pub fn keys_of(v: &str) -> Option<u64> {
    v.split(',').find_map(|kv| kv.strip_prefix("keys=")).and_then(|n| n.parse().ok())
}

/// What to back up after a successful save.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Top-level names in it to back up (dump file, AOF directory or file), that exist.
    pub include: Vec<String>,
    /// `(key, value)` facts for the snapshot, e.g. `keyspace.db0` -> `keys=3,expires=0,avg_ttl=0`.
    pub labels: Vec<(String, String)>,
}

/// A completed save, as the server describes it.
#[derive(Debug, Clone)]
pub struct Saved {
    /// `CONFIG GET dir` (a path on the server's side), when allowed.
    pub dir: Option<String>,
    /// The dump file name (`dump.rdb`), then the AOF directory and file names the server uses;
    /// which of them exist is for the copier to see.
    pub names: Vec<String>,
    /// `(key, value)` facts for the snapshot, e.g. `keyspace.db0` -> `keys=3,expires=0,avg_ttl=0`.
    pub labels: Vec<(String, String)>,
}

/// Runs `BGSAVE` and waits until it has completed successfully; returns what to copy.
///
/// # Errors
/// Unreachable server, a failed or timed-out save, an unknown data directory: each named.
pub fn prepare(spec: &RedisSpec) -> Result<Prepared> {
    let saved = save(spec)?;
    let what = format!("redis {}:{}", spec.host, spec.port);
    let data_dir = match (&spec.data_dir, &saved.dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{what}: CONFIG GET dir is not allowed; give the data directory as ?dir=/path"),
            ))
        }
    };
    let mut include = vec![saved.names[0].clone()];
    include.extend(saved.names[1..].iter().filter(|n| data_dir.join(n).exists()).cloned());
    if !data_dir.join(&include[0]).is_file() {
        return Err(Error::new(
            ErrorKind::Missing,
            format!("{what}: saved, but {} does not exist here (is the server local? give ?dir=)", data_dir.join(&include[0]).display()),
        ));
    }
    Ok(Prepared { data_dir, include, labels: saved.labels })
}

/// Runs `BGSAVE` and waits until it has completed successfully (`rdb_bgsave_in_progress:0`, the
/// save counter or `LASTSAVE` moved, `rdb_last_bgsave_status:ok`), within `spec.timeout`.
///
/// # Errors
/// Unreachable server, a refused, failed or timed-out save: each named.
pub fn save(spec: &RedisSpec) -> Result<Saved> {
    let mut c = Conn::open(spec)?;
    let what = c.what.clone();
    let dir = c.config("dir")?;
    let dbfilename = c.config("dbfilename")?.unwrap_or_else(|| "dump.rdb".into());
    let saves = |c: &mut Conn| -> Result<(Option<i64>, i64)> {
        let info = c.info("persistence")?;
        let n = info.iter().find(|(k, _)| k == "rdb_saves").and_then(|(_, v)| v.parse().ok());
        let last = match c.ok(&["LASTSAVE"])? {
            Reply::Int(i) => i,
            r => return Err(Error::new(ErrorKind::Io, format!("{}: LASTSAVE answered {r:?}", c.what))),
        };
        Ok((n, last))
    };
    let start = Instant::now();
    // A save already running started before we asked: wait for it, then take our own.
    wait_idle(&mut c, spec.timeout, start)?;
    let before = saves(&mut c)?;
    if before.0.is_none() {
        // Old Redis: LASTSAVE has one-second resolution, so make sure ours lands in a new second.
        std::thread::sleep(Duration::from_millis(1100));
    }
    loop {
        match c.call(&["BGSAVE"])? {
            Reply::Error(e) if e.contains("in progress") && start.elapsed() < spec.timeout => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Reply::Error(e) => return Err(Error::new(ErrorKind::InvalidInput, format!("{what}: BGSAVE refused: {e}"))),
            _ => break,
        }
    }
    loop {
        let info = c.info("persistence")?;
        let get = |k: &str| info.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str()).unwrap_or("");
        if get("rdb_bgsave_in_progress") == "0" {
            let now = saves(&mut c)?;
            let moved = match (before.0, now.0) {
                (Some(a), Some(b)) => b > a,
                _ => now.1 > before.1,
            };
            if moved {
                if get("rdb_last_bgsave_status") != "ok" {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{what}: BGSAVE failed (rdb_last_bgsave_status:{}); see the Redis log", get("rdb_last_bgsave_status")),
                    ));
                }
                break;
            }
        }
        if start.elapsed() > spec.timeout {
            return Err(Error::new(ErrorKind::Interrupted, format!("{what}: BGSAVE did not finish within {:?}", spec.timeout)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut labels: Vec<(String, String)> = c.info("keyspace")?.into_iter().map(|(k, v)| (format!("keyspace.{k}"), v)).collect();
    if let Some(v) = c.info("server")?.into_iter().find(|(k, _)| k == "redis_version") {
        labels.push(("redis_version".into(), v.1));
    }
    let mut names = vec![dbfilename];
    names.extend([c.config("appenddirname")?, c.config("appendfilename")?].into_iter().flatten().filter(|n| !n.is_empty()));
    Ok(Saved { dir, names, labels })
}

fn wait_idle(c: &mut Conn, timeout: Duration, start: Instant) -> Result<()> {
    loop {
        let info = c.info("persistence")?;
        if info.iter().any(|(k, v)| k == "rdb_bgsave_in_progress" && v == "0") {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::new(ErrorKind::Interrupted, format!("{}: a running BGSAVE did not finish within {timeout:?}", c.what)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = RedisSpec::parse("redis://127.0.0.1:6379?dir=/data2/rpger/redis&timeout=30").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.data_dir.unwrap(), s.timeout),
            ("127.0.0.1", 6379, PathBuf::from("/data2/rpger/redis"), Duration::from_secs(30))
        );
        for bad in ["127.0.0.1:6379", "redis://host", "redis://:1", "redis://h:99999", "redis://h:1?x=y"] {
            assert!(RedisSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_replies_and_refuses_huge_ones() {
        let mut r = &b"*2\r\n$3\r\ndir\r\n$4\r\n/tmp\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap().text(), "dir /tmp");
        let mut r = &b"$999999999999\r\n"[..];
        assert!(read_reply(&mut r).is_err());
        let mut r = &b"-ERR nope\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR nope".into()));
        let mut r = &b"garbage"[..];
        assert!(read_reply(&mut r).is_err());
    }
}
