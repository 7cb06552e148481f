//! `rpger-store backup`: named sources from the command line, or the config file's nightly
//! sources (then logged to backup.log and followed by the configured retention).

use crate::args::{parse_duration, parse_time, BackupArgs, Cli};
use crate::config::{self, Config};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, bail, Result};
use rpger_engine::backup::{self, BackupOptions, SourceInput, SourceSpec};
use rpger_engine::retention::{self, policy};
use rpger_engine::sources::redis::RedisSpec;
use rpger_engine::store::Store;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Splits `NAME=PATH`; `-` as PATH means stdin (allowed once), `cmd:COMMAND` a command's stdout,
/// `redis://...` a Redis server.
fn parse_sources(a: &BackupArgs) -> Result<Vec<SourceSpec>> {
    parse_source_args(&a.sources, &a.stdin_name)
}

/// [`parse_sources`] of `--source` values (also `restore-db`'s, which names sources the same way).
pub(super) fn parse_source_args(sources: &[String], stdin_name: &str) -> Result<Vec<SourceSpec>> {
    let mut out = vec![];
    let mut stdin_used = false;
    for s in sources {
        let (name, path) = s.split_once('=').ok_or_else(|| anyhow!("--source {s:?}: expected NAME=PATH or NAME=-"))?;
        let input = if path == "-" {
            if stdin_used {
                bail!("--source {s:?}: only one source can read stdin");
            }
            stdin_used = true;
            SourceInput::Stream { file_name: stdin_name.to_string(), reader: Box::new(std::io::stdin()) }
        } else if path.starts_with("redis://") {
            SourceInput::Redis(RedisSpec::parse(path)?)
        } else if let Some(rest) = path.strip_prefix("docker-") {
            let file_name = if stdin_name == "stdin" { "stdout".to_string() } else { stdin_name.to_string() };
            parse_docker(rest, file_name).map_err(|e| anyhow!("--source {s:?}: {e}"))?
        } else if let Some(rest) = path.strip_prefix("frozen:") {
            SourceInput::Frozen { path: frozen_dir(rest)?, pid: frozen_pid(rest)? }
        } else if let Some(command) = path.strip_prefix("mongodump:") {
            if command.trim().is_empty() {
                bail!("--source {s:?}: empty command");
            }
            SourceInput::MongoDump { command: command.to_string() }
        } else if let Some(command) = path.strip_prefix("cmd:") {
            if command.trim().is_empty() {
                bail!("--source {s:?}: empty command");
            }
            let file_name = if stdin_name == "stdin" { "stdout".to_string() } else { stdin_name.to_string() };
            SourceInput::Command { file_name, command: command.to_string() }
        } else if path.is_empty() {
            bail!("--source {s:?}: empty path");
        } else {
            SourceInput::Path(path.into())
        };
        out.push(SourceSpec { name: name.to_string(), input });
    }
    Ok(out)
}

/// The part after `docker-` of a Docker source: `mongodump:CONTAINER[ MORE ARGS]`,
/// `redis:CONTAINER[:PORT][?timeout=SECS]`, `copy:CONTAINER:/PATH`, `exec:CONTAINER:COMMAND`
/// or `paused:CONTAINER:HOSTDIR`.
fn parse_docker(spec: &str, file_name: String) -> Result<SourceInput> {
    const FORMS: &str = "docker-mongodump:CONTAINER, docker-redis:CONTAINER[:PORT], docker-copy:CONTAINER:/PATH, docker-exec:CONTAINER:COMMAND or docker-paused:CONTAINER:HOSTDIR";
    let (kind, rest) = spec.split_once(':').ok_or_else(|| anyhow!("expected {FORMS}"))?;
    let two = |what: &str| -> Result<(String, String)> {
        let (c, x) = rest
            .split_once(':')
            .filter(|(c, x)| !c.is_empty() && !x.is_empty())
            .ok_or_else(|| anyhow!("expected docker-{kind}:CONTAINER:{what}"))?;
        Ok((c.to_string(), x.to_string()))
    };
    Ok(match kind {
        "mongodump" => {
            let mut words = rest.split_whitespace().map(str::to_string);
            let container = words.next().ok_or_else(|| anyhow!("expected docker-mongodump:CONTAINER"))?;
            SourceInput::DockerMongoDump { container, args: words.collect() }
        }
        "redis" => {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (container, port) = match addr.split_once(':') {
                Some((c, p)) => (c, p.parse().map_err(|_| anyhow!("bad port {p:?}"))?),
                None => (addr, 6379),
            };
            if container.is_empty() {
                bail!("expected docker-redis:CONTAINER[:PORT]");
            }
            let timeout = match query.split_once('=') {
                None if query.is_empty() => std::time::Duration::from_secs(600),
                Some(("timeout", t)) => std::time::Duration::from_secs(t.parse().map_err(|_| anyhow!("bad timeout {t:?}"))?),
                _ => bail!("unknown option {query:?} (only timeout=SECS)"),
            };
            SourceInput::DockerRedis { container: container.to_string(), port, timeout }
        }
        "copy" => {
            let (container, path) = two("/PATH")?;
            if !path.starts_with('/') {
                bail!("the path inside the container must be absolute, not {path:?}");
            }
            SourceInput::DockerCopy { container, path }
        }
        "exec" => {
            let (container, command) = two("COMMAND")?;
            SourceInput::DockerExec { container, file_name, command }
        }
        "paused" => {
            let (container, dir) = two("HOSTDIR")?;
            SourceInput::PausedContainer { container, path: dir.into() }
        }
        _ => bail!("unknown Docker source docker-{kind}; expected {FORMS}"),
    })
}

/// `DIR?pid=N` or `DIR?pidfile=PATH` of a `frozen:` source.
fn frozen_parts(spec: &str) -> Result<(&str, &str, &str)> {
    let (dir, q) = spec.split_once('?').ok_or_else(|| anyhow!("frozen:{spec}: expected frozen:DIR?pid=N or frozen:DIR?pidfile=PATH"))?;
    let (k, v) = q.split_once('=').ok_or_else(|| anyhow!("frozen:{spec}: expected pid=N or pidfile=PATH after '?'"))?;
    Ok((dir, k, v))
}

fn frozen_dir(spec: &str) -> Result<std::path::PathBuf> {
    Ok(frozen_parts(spec)?.0.into())
}

fn frozen_pid(spec: &str) -> Result<i32> {
    let (_, k, v) = frozen_parts(spec)?;
    let text = match k {
        "pid" => v.to_string(),
        "pidfile" => std::fs::read_to_string(v).map_err(|e| anyhow!("frozen source: cannot read pid file {v}: {e}"))?,
        _ => bail!("frozen:{spec}: unknown option {k} (use pid= or pidfile=)"),
    };
    text.trim().parse().map_err(|_| anyhow!("frozen:{spec}: {text:?} is not a process id"))
}

/// The config's `[[source]]` entries (those named by --only, when given).
pub(super) fn config_sources(cfg: &Config, only: &[String]) -> Result<Vec<SourceSpec>> {
    for o in only {
        if !cfg.sources.iter().any(|s| &s.name == o) {
            let names: Vec<_> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
            bail!("--only {o}: no such configured source (configured: {})", names.join(", "));
        }
    }
    let mut out = vec![];
    for s in cfg.sources.iter().filter(|s| only.is_empty() || only.contains(&s.name)) {
        let input = if let Some(p) = &s.path {
            SourceInput::Path(p.clone())
        } else if let Some(c) = &s.command {
            SourceInput::Command { file_name: s.file_name.clone().unwrap_or_else(|| "stdout".into()), command: c.clone() }
        } else if let Some(r) = &s.redis {
            SourceInput::Redis(RedisSpec::parse(r)?)
        } else if let Some(c) = &s.mongodump {
            SourceInput::MongoDump { command: c.clone() }
        } else if let Some(f) = &s.frozen {
            SourceInput::Frozen { path: frozen_dir(f)?, pid: frozen_pid(f)? }
        } else if let Some(d) = &s.docker {
            parse_docker(d, s.file_name.clone().unwrap_or_else(|| "stdout".into()))
                .map_err(|e| anyhow!("[[source]] {:?}: docker = {d:?}: {e}", s.name))?
        } else {
            bail!("[[source]] {:?} has no path, command, mongodump, frozen, redis or docker", s.name);
        };
        out.push(SourceSpec { name: s.name.clone(), input });
    }
    Ok(out)
}

fn tree_bytes(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum()).unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

/// Refuses to start when the store's filesystem cannot hold the expected new data: twice what the
/// last backup added, or for a first backup half the size of the path sources (zstd roughly
/// halves dumps), plus 16 MiB of slack.
fn check_space(store: &Store, specs: &[SourceSpec]) -> Result<()> {
    let last = store.list_snapshots()?.pop().and_then(|n| store.read_snapshot(&n).ok());
    let (estimate, why) = match last {
        Some(s) => (s.new_stored_bytes.saturating_mul(2), format!("twice the {} the last backup added", output::bytes(s.new_stored_bytes))),
        None => {
            let total: u64 = specs.iter().map(|s| if let SourceInput::Path(p) = &s.input { tree_bytes(p) } else { 0 }).sum();
            (total / 2, format!("half of the {} to read", output::bytes(total)))
        }
    };
    let need = estimate + (16 << 20);
    let free = store.free_bytes()?;
    if need > free {
        bail!(
            "not enough free space for this backup on the filesystem of {}: {} available, about {} needed ({why}, plus 16 MiB); free some space or pass --no-space-check",
            store.root().display(),
            output::bytes(free),
            output::bytes(need)
        );
    }
    Ok(())
}

pub fn run(cli: &Cli, a: &BackupArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let cfg = super::config(cli)?;
    let nightly = a.sources.is_empty();
    let sources = if nightly {
        if cfg.sources.is_empty() {
            bail!(
                "no --source given and no [[source]] in the config file {} (see `rpger-store config init`)",
                cli.config.as_deref().unwrap_or(Path::new(config::DEFAULT_PATH)).display()
            );
        }
        config_sources(&cfg, &a.only)?
    } else {
        if !a.only.is_empty() {
            bail!("--only selects configured sources; with --source, name just the sources you want");
        }
        parse_sources(a)?
    };
    let labels = a
        .labels
        .iter()
        .map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| anyhow!("--label {l:?}: expected KEY=VALUE")))
        .collect::<Result<Vec<_>>>()?;
    let log_dir = super::log_dir(cli, &a.log_dir)?;
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let log = |line: &str| {
        if nightly {
            super::log_line(&log_dir, "backup.log", line);
        }
    };
    log(&format!("backup start sources={} store={}", names.join(","), store.root().display()));
    let started = Instant::now();
    let result = (|| -> Result<backup::BackupReport> {
        if !a.no_space_check {
            check_space(&store, &sources)?;
        }
        let opts = BackupOptions {
            sources,
            local_time: a.local_time,
            time_unix_ns: a.time.as_deref().map(parse_time).transpose().map_err(|e| anyhow!("--time: {e}"))?,
            labels,
            lock_wait: parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
            allow_partial: a.allow_partial,
            delta: !a.no_delta,
        };
        Ok(backup::backup(&store, opts, &Bar::new(cli.json))?)
    })();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            log(&format!("backup FAILED after {:.1}s: {e:#}", started.elapsed().as_secs_f64()));
            return Err(e);
        }
    };
    let s = &r.snapshot;
    for src in &s.sources {
        log(&format!("backup source {}: {} bytes in {} entries", src.name, src.logical_bytes, src.entries));
    }
    for (name, e) in &r.failed {
        log(&format!("backup source {name} FAILED: {e}"));
        eprintln!("rpger-store: error: {e}");
    }
    log(&format!(
        "backup {} snapshot={} read={} new_stored={} duration={:.1}s",
        if r.failed.is_empty() { "ok" } else { "PARTIAL" },
        s.name,
        r.bytes_read,
        s.new_stored_bytes,
        started.elapsed().as_secs_f64()
    ));
    // Retention only follows configured (nightly) runs: a manual --source backup never deletes.
    let retention_json = match (&cfg.retention, nightly) {
        (Some(ret), true) => Some(apply_retention(cli, &store, ret, a, &log)?),
        _ => None,
    };
    if cli.json {
        output::print_json(json!({
            "command": "backup",
            "snapshot": s.name,
            "sources": s.sources.iter().map(|x| json!({"name": x.name, "logical_bytes": x.logical_bytes, "entries": x.entries, "manifest": x.manifest.to_hex()})).collect::<Vec<_>>(),
            "bytes_read": r.bytes_read, "chunks": r.chunks, "new_chunks": r.new_chunks,
            "new_raw_bytes": s.new_raw_bytes, "new_stored_bytes": s.new_stored_bytes, "packs": r.packs,
            "skipped": r.skipped, "retention": retention_json,
            "partial": !r.failed.is_empty(), "failed": r.failed.iter().map(|(n, e)| json!({"source": n, "error": e})).collect::<Vec<_>>(),
        }));
    } else {
        for sk in &r.skipped {
            eprintln!("rpger-store: warning: skipped {sk}");
        }
        println!(
            "snapshot {} committed: {} read, {} of {} chunks new, {} new data stored ({} before compression)",
            s.name,
            output::bytes(r.bytes_read),
            r.new_chunks,
            r.chunks,
            output::bytes(s.new_stored_bytes),
            output::bytes(s.new_raw_bytes)
        );
    }
    if !r.failed.is_empty() {
        eprintln!("rpger-store: error: snapshot {} is PARTIAL: {} source(s) failed (see above)", s.name, r.failed.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn apply_retention(cli: &Cli, store: &Store, ret: &config::Retention, a: &BackupArgs, log: &dyn Fn(&str)) -> Result<serde_json::Value> {
    let p = policy::Policy {
        keep_last: ret.keep_last.unwrap_or(0),
        keep_daily: ret.keep_daily.unwrap_or(0),
        keep_weekly: ret.keep_weekly.unwrap_or(0),
        keep_monthly: ret.keep_monthly.unwrap_or(0),
        keep_within_secs: ret
            .keep_within
            .as_deref()
            .map(policy::parse_within)
            .transpose()
            .map_err(|e| anyhow!("[retention] keep_within: {e}"))?,
    };
    let p = if p.is_empty() { policy::Policy::DEFAULT } else { p };
    let wait = parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?;
    let decisions = retention::forget(store, &p, false, wait)?;
    let removed: Vec<&str> = decisions.iter().filter(|d| !d.keep).map(|d| d.name.as_str()).collect();
    log(&format!("retention forgot {} snapshot(s): {}", removed.len(), removed.join(",")));
    let mut out = json!({"removed": removed});
    if ret.prune.unwrap_or(true) {
        let r = super::prune::execute(store, &super::prune::options(false, ret.max_repack_ratio.unwrap_or(0.1), &a.lock_wait)?)?;
        log(&format!(
            "prune reclaimed={} store={} packs_deleted={} packs_repacked={}",
            r.reclaimed(),
            r.bytes_after,
            r.packs_deleted,
            r.packs_repacked
        ));
        if !cli.json {
            super::prune::print_human(&r);
        }
        out["prune"] = super::prune::to_json(&r);
    }
    if !cli.json {
        println!("retention: {} snapshot(s) forgotten", removed.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_source_forms() {
        let p = |s: &str| parse_docker(s, "out".into());
        assert!(matches!(p("mongodump:rpger-mongodb --db=rpger").unwrap(),
            SourceInput::DockerMongoDump { container, args } if container == "rpger-mongodb" && args == ["--db=rpger"]));
        assert!(matches!(p("redis:r1:6380?timeout=5").unwrap(),
            SourceInput::DockerRedis { container, port: 6380, timeout } if container == "r1" && timeout.as_secs() == 5));
        assert!(matches!(p("redis:r1").unwrap(), SourceInput::DockerRedis { port: 6379, .. }));
        assert!(matches!(p("copy:c:/data").unwrap(), SourceInput::DockerCopy { path, .. } if path == "/data"));
        assert!(
            matches!(p("exec:c:cat /x | gzip -1").unwrap(), SourceInput::DockerExec { command, file_name, .. } if command == "cat /x | gzip -1" && file_name == "out")
        );
        assert!(matches!(p("paused:c:/data2/rpger/chroma").unwrap(), SourceInput::PausedContainer { .. }));
        for bad in
            ["mongodump:", "redis::1", "redis:c:port", "redis:c?x=1", "copy:c:rel/path", "copy:c", "exec:c:", "paused::/d", "nope:c", "x"]
        {
            assert!(p(bad).is_err(), "{bad}");
        }
        // The example config's sources all parse.
        let cfg: Config = toml::from_str(config::EXAMPLE).unwrap();
        assert_eq!(config_sources(&cfg, &[]).unwrap().len(), 3);
    }
}
