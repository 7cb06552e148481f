//! The TOML config file: the store, the log directory, retention, and the nightly sources.
//! Every setting can also be given on the command line, which wins.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the config is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rpger-store/config.toml";
/// Store used when neither `--store`, `$RPGER_STORE` nor the config names one.
pub const DEFAULT_STORE: &str = "/data2/rpger/backups";
/// Log directory used when neither the command line nor the config names one.
pub const DEFAULT_LOG_DIR: &str = "/data2/rpger/logs";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store directory.
    pub store: Option<PathBuf>,
    /// Log directory (backup.log, backup-verify.log).
    pub log_dir: Option<PathBuf>,
    /// Retention run after every successful configured backup.
    pub retention: Option<Retention>,
    /// The nightly sources, in the order given.
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

/// `[retention]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<String>,
    /// Prune after forgetting (default true).
    pub prune: Option<bool>,
    pub max_repack_ratio: Option<f64>,
}

/// One `[[source]]`: a name and exactly one way to reach its data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub path: Option<PathBuf>,
    pub command: Option<String>,
    /// With `command`: the stored file name (default `stdout`).
    pub file_name: Option<String>,
    pub redis: Option<String>,
    /// A command writing a mongodump `--archive` to stdout; demultiplexed into collections.
    pub mongodump: Option<String>,
    /// `DIR?pid=N` or `DIR?pidfile=PATH`: the writer is stopped while DIR is read.
    pub frozen: Option<String>,
    /// A source in a Docker container: `mongodump:CONTAINER`, `redis:CONTAINER[:PORT]`,
    /// `copy:CONTAINER:/PATH`, `exec:CONTAINER:COMMAND` or `paused:CONTAINER:HOSTDIR`.
    pub docker: Option<String>,
}

impl Config {
    /// Loads `path`; a missing file is an error only when `explicit`.
    pub fn load(path: &Path, explicit: bool) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let c: Config = toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
                for s in &c.sources {
                    let n = [
                        s.path.is_some(),
                        s.command.is_some(),
                        s.redis.is_some(),
                        s.mongodump.is_some(),
                        s.frozen.is_some(),
                        s.docker.is_some(),
                    ]
                    .iter()
                    .filter(|x| **x)
                    .count();
                    if n != 1 {
                        bail!(
                            "config file {}: [[source]] {:?} needs exactly one of path, command, mongodump, frozen, redis, docker",
                            path.display(),
                            s.name
                        );
                    }
                }
                Ok(c)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("config file {}", path.display())),
        }
    }
}

/// The commented example written by `rpger-store config init`.
pub const EXAMPLE: &str = r#"# rpger-store configuration for the RPGer stack (MongoDB, Redis, Chroma on one host).
# Every setting can also be given on the command line, which wins.

# Where snapshots are stored (--store, $RPGER_STORE).
store = "/data2/rpger/backups"

# backup.log (one line per event of a nightly run) and backup-verify.log go here (--log-dir).
log_dir = "/data2/rpger/logs"

# Applied after every successful `rpger-store backup` that uses the sources below.
# Snapshots are grouped by their set of sources; the newest of each group is always kept.
[retention]
keep_daily = 7
# keep_weekly = 4
# keep_monthly = 6
# keep_within = "30d"
prune = true
max_repack_ratio = 0.1   # unused bytes left in packs, as a share of the live bytes

# `rpger-store backup` with no --source backs these up into one snapshot; --only NAME picks one.
# `rpger-store restore-db SNAPSHOT --yes` puts them back where they were read from.
# Each source has a name (restored into TARGET/NAME) and exactly one of:
#   mongodump = a command writing `mongodump --archive` to stdout: demultiplexed while it streams
#             into mongodb_backup/<db>/<collection>.bson + .metadata.json (what mongorestore --dir
#             takes), each collection's CRC checked; a non-zero exit fails the run
#   frozen  = "DIR?pidfile=PATH" (or ?pid=N): the writing process is stopped (SIGSTOP) while DIR
#             is read and resumed on every path, even if rpger-store is killed
#   path    = a directory or file
#   command = a shell command whose standard output is stored (file_name = "..."); a non-zero
#             exit or no output fails the run and nothing is committed
#   redis   = "redis://HOST:PORT[?dir=DATADIR]": BGSAVE, then dump.rdb and the AOF
#             (password from the RPGER_REDIS_PASSWORD environment variable)
#   docker  = a source inside a container, through the Docker engine's API (no docker CLI):
#     "mongodump:CONTAINER [ARGS]"  mongodump --archive --numParallelCollections=1 run in the
#                                   container; credentials from $RPGER_MONGODB_URI, passed in a
#                                   config file written into the container for the run only
#     "redis:CONTAINER[:PORT]"      BGSAVE over the network, then dump.rdb and the AOF copied out
#                                   of the container
#     "copy:CONTAINER:/PATH"        the path copied out while the container is paused
#     "paused:CONTAINER:HOSTDIR"    a bind-mounted host dir read while the container is paused
#     "exec:CONTAINER:COMMAND"      the stdout of `sh -c COMMAND` in the container (file_name)

# The RPGer stack on a Docker host:
[[source]]
name = "mongodb"
docker = "mongodump:rpger-mongodb"

[[source]]
name = "redis"
docker = "redis:rpger-redis"

[[source]]
name = "chroma"
# Chroma's SQLite file and HNSW segments form one state: pause it while they are read.
docker = "paused:rpger-chroma:/data2/rpger/chroma"

# The same on a plain host:
# [[source]]
# name = "mongodb"
# # Never --gzip (it defeats dedup); one collection at a time keeps the order stable.
# mongodump = "mongodump --archive --numParallelCollections=1"
# [[source]]
# name = "redis"
# redis = "redis://127.0.0.1:6379?dir=/data2/rpger/redis"
# [[source]]
# name = "chroma"
# # Stop the server (SIGSTOP) while its files are read; always resumed.
# frozen = "/data2/rpger/chroma?pidfile=/run/chroma.pid"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let c: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c.sources.len(), 3);
        assert_eq!(c.retention.unwrap().keep_daily, Some(7));
        assert!(toml::from_str::<Config>("stroe = \"/x\"").is_err(), "unknown keys are errors");
    }
}
