//! Command-line arguments (clap derive). The engine knows nothing of clap.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes, also shown in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    finished with problems: damage found (a restore wrote everything else), or a partial
       backup (--allow-partial) committed without its failed sources
  2    could not run: bad arguments, not a store, missing source, I/O error
  3    the store is locked by another process (its holder is named)
  130  interrupted";

/// rpger-store: deduplicating, verified backups of the RPGer database stack.
#[derive(Debug, Parser)]
#[command(name = "rpger-store", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Store directory [default: the config's `store`, else /data2/rpger/backups].
    #[arg(long, global = true, env = "RPGER_STORE")]
    pub store: Option<PathBuf>,
    /// Config file [default: /etc/rpger-store/config.toml, used when it exists].
    #[arg(long, global = true, env = "RPGER_STORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Worker threads for hashing and compression (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty store.
    Init(InitArgs),
    /// Back up one or more named sources into one new snapshot.
    Backup(BackupArgs),
    /// List snapshots: name, time, sources, logical size, new bytes stored.
    Snapshots,
    /// Restore a snapshot (or one source of it) into a directory.
    Restore(RestoreArgs),
    /// Check snapshots: quick (structure) by default, --deep to re-read and re-hash every byte.
    Verify(VerifyArgs),
    /// Prove a snapshot's dumps load: its Redis source is restored into a scratch directory
    /// and loaded by a real redis-server on 127.0.0.1, whose key counts must be the ones
    /// recorded at backup.
    TestRestore(TestRestoreArgs),
    /// Put a snapshot (or one source) back into the live databases: the containers and
    /// directories its sources were backed up from. Shows the plan; acts only with --yes.
    RestoreDb(RestoreDbArgs),
    /// Store size, logical size, dedup and compression ratios.
    Stats,
    /// Write a snapshot's MongoDB source back as a mongodump archive (for `mongorestore
    /// --archive`); `restore` gives the directory layout that `mongorestore --dir` takes.
    MongodbArchive(MongoArchiveArgs),
    /// Turn legacy backup folders (YYYY-MM-DD_HH-MM-SS/{mongodb,redis,chroma}) into snapshots
    /// named by their original date; folders already imported are skipped.
    ImportLegacy(ImportArgs),
    /// Remove snapshots a retention policy does not keep (default: --keep-daily 7).
    Forget(ForgetArgs),
    /// Reclaim the space of data no snapshot references.
    Prune(PruneArgs),
    /// Run a self-contained demo: generate dumps, back them up, restore, print the dedup ratio.
    Demo(DemoArgs),
    /// Manage the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented example config for the RPGer stack to --config (default
    /// /etc/rpger-store/config.toml), or print it with --stdout.
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Print the example instead of writing it.
        #[arg(long)]
        stdout: bool,
    },
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Average chunk size in bytes (min = avg/4, max = 4 x avg). Fixed for the store's life.
    #[arg(long, default_value_t = 16384)]
    pub chunk_avg: u32,
    /// zstd level for new chunks (1-22). The default, 2, is the fastest for its size on database
    /// dumps; 3 stores a source tree about 3% smaller at the same speed, but makes a first backup
    /// of dumps about 1.2x slower for 0.4% less. Fixed for the store's life.
    #[arg(long, default_value_t = rpger_engine::store::DEFAULT_ZSTD_LEVEL)]
    pub zstd_level: i32,
}

/// `backup` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  rpger-store backup --source mongodb=/data2/rpger/dumps/mongodb --source redis=/data2/rpger/redis/dump.rdb\n  mongodump --archive | rpger-store backup --source mongodb=- --stdin-name mongodb.archive"
)]
pub struct BackupArgs {
    /// A source as NAME=PATH (a directory or a file), NAME=- (read stdin), NAME=cmd:COMMAND (the
    /// standard output of `sh -c COMMAND`; a non-zero exit or no output fails the run) or
    /// NAME=redis://HOST:PORT[?dir=DATADIR] (BGSAVE, then dump.rdb and the AOF; password from
    /// $RPGER_REDIS_PASSWORD) or NAME=mongodump:COMMAND (COMMAND writes `mongodump --archive` to
    /// stdout; stored as mongodb_backup/<db>/<collection>.bson + .metadata.json, every CRC
    /// checked), NAME=frozen:DIR?pid=N|pidfile=PATH (the process is stopped while DIR is read,
    /// and always resumed). Docker sources (through the engine's API): NAME=docker-mongodump:CONTAINER
    /// (mongodump --archive run in the container; URI with credentials from $RPGER_MONGODB_URI),
    /// NAME=docker-redis:CONTAINER[:PORT] (BGSAVE, then dump.rdb and the AOF copied out),
    /// NAME=docker-copy:CONTAINER:/PATH (copied out while the container is paused),
    /// NAME=docker-paused:CONTAINER:HOSTDIR (its bind-mounted HOSTDIR read while it is paused;
    /// always unpaused) and NAME=docker-exec:CONTAINER:COMMAND (stdout of `sh -c COMMAND` in it).
    /// Repeatable.
    /// Without --source, the config file's [[source]] entries are backed up, its [retention]
    /// applied afterwards and each run logged to LOG_DIR/backup.log.
    #[arg(long = "source", value_name = "NAME=PATH")]
    pub sources: Vec<String>,
    /// With configured sources: back up only this one (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// When a source fails, still commit the others; the snapshot is marked partial, never counts
    /// toward retention, and the run exits 1.
    #[arg(long)]
    pub allow_partial: bool,
    /// Skip the check that the store's filesystem has room for the expected new data.
    #[arg(long)]
    pub no_space_check: bool,
    /// Store every new chunk whole (compressed alone) instead of as a delta against a similar
    /// chunk already in the store. Deltas make a night cost what changed; this is for
    /// comparisons and for stores that must not depend on older chunks.
    #[arg(long)]
    pub no_delta: bool,
    /// Directory of backup.log [default: the config's `log_dir`, else /data2/rpger/logs].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// File name under which a stdin source (default `stdin`) or a cmd: source (default
    /// `stdout`) is stored.
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Name the snapshot by local time instead of UTC.
    #[arg(long)]
    pub local_time: bool,
    /// Snapshot time instead of now, as YYYY-MM-DD_HH-MM-SS (UTC) or RFC 3339, e.g. to import
    /// the legacy backup folders with their original dates.
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Annotation stored in the snapshot, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// How long to wait for a conflicting lock, e.g. 30s, 10m (default: fail at once).
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `restore` options.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot name, or `latest`.
    pub snapshot: String,
    /// Target directory; source NAME lands in TARGET/NAME. Created if missing; must be empty
    /// unless --overwrite.
    pub target: PathBuf,
    /// Restore only this source.
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
    /// Allow a non-empty target: replace what the snapshot holds (symlinks found there are
    /// replaced, never followed).
    #[arg(long)]
    pub overwrite: bool,
    /// How long to wait for a conflicting lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `test-restore` options.
#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 every source tested loaded (sources this build cannot load are listed as not \
tested); 1 a source did not load or holds other key counts than recorded; 2 nothing could be tested or the \
test could not run.\n\nLoaded: Redis (dump.rdb, by redis-server; key counts per database compared with the \
INFO keyspace of the backup). Not loaded yet: MongoDB (needs mongod and mongorestore) and Chroma (needs the \
Chroma server); `verify --dumps` checks their files.\n\nExamples:\n  rpger-store test-restore latest --only redis\n  \
rpger-store test-restore latest --only redis --redis-image redis:7   # in a temporary container of the stack's image")]
pub struct TestRestoreArgs {
    /// Snapshot name, or `latest`.
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Test only this source.
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
    /// The redis-server binary that loads Redis dumps.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: std::path::PathBuf,
    /// Load Redis dumps in a temporary container of this local image (e.g. the stack's Redis
    /// image; none is pulled) instead of a redis-server on this host; always removed.
    #[arg(long, value_name = "IMAGE")]
    pub redis_image: Option<String>,
    /// Where the snapshot is restored for the test (needs room for the sources tested);
    /// removed afterwards [default: $TMPDIR, else /tmp].
    #[arg(long)]
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Longest wait for a server to load its data, e.g. 30s, 10m.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Directory of the verify log (`backup-verify.log`) [default: the config's `log_dir`, else
    /// /data2/rpger/logs].
    #[arg(long)]
    pub log_dir: Option<std::path::PathBuf>,
    /// How long to wait for a conflicting lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `restore-db` options.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Each source goes back where its backup read it from (the config's [[source]] entries, or --source as for backup):\n",
    "  docker-paused:CONTAINER:HOSTDIR  the container is stopped, HOSTDIR swapped for the snapshot's copy (the old one\n",
    "                                   kept beside it as HOSTDIR.before-restore-TIME), the container started\n",
    "  docker-redis:CONTAINER[:PORT]    the container is stopped, its data files saved as a tar in --keep-dir, the\n",
    "                                   snapshot's written in (owners as backed up), the container started; the key\n",
    "                                   counts Redis loads must be the ones recorded at backup\n",
    "  docker-copy:CONTAINER:/PATH      the same, without the key counts\n",
    "  docker-mongodump:CONTAINER       the current databases dumped into --keep-dir, then `mongorestore --archive\n",
    "                                   --drop` fed the snapshot's archive in the container ($RPGER_MONGODB_URI as for\n",
    "                                   backup)\n",
    "  a directory                      swapped like HOSTDIR (stop its writer first)\n",
    "Other sources (redis://, frozen:, mongodump:, commands) are refused with what to do instead. Every source is read\n",
    "back out of the store and checked before its database is touched; nothing that was replaced is deleted.\n\n",
    "Exit codes: 0 every source restored; 1 some source failed (each is named; the others were restored); 2 nothing\n",
    "was touched (no --yes, a source this build cannot put back, a bad snapshot).\n\n",
    "Examples:\n",
    "  rpger-store restore-db latest                      # show what would be done\n",
    "  rpger-store restore-db latest --only redis --yes\n",
    "  rpger-store restore-db 2026-11-25_03-00-00 --yes   # the whole stack"
))]
pub struct RestoreDbArgs {
    /// Snapshot name, or `latest`.
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Restore only this source (repeatable), e.g. --only redis.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// A source and where it lives, as for `backup --source` (instead of the config's).
    #[arg(long = "source", value_name = "NAME=SPEC")]
    pub sources: Vec<String>,
    /// Do it: replace the live data (without it the plan is shown and nothing is touched).
    #[arg(long)]
    pub yes: bool,
    /// Where what a container path or MongoDB held before is saved [default:
    /// /data2/rpger/before-restore].
    #[arg(long)]
    pub keep_dir: Option<PathBuf>,
    /// Where sources are staged before they go into a container (needs room for them)
    /// [default: $TMPDIR, else /tmp]; directories are staged beside themselves.
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// How long a container may take to stop before it is killed, e.g. 30s.
    #[arg(long, default_value = "30s")]
    pub stop_timeout: String,
    /// Longest wait for a database to come back and load, e.g. 30s, 10m.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Directory of `restore.log` [default: the config's `log_dir`, else /data2/rpger/logs].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// How long to wait for a conflicting lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `verify` options.
#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 everything checked is sound; 1 damage found (each damaged object and every \
file that depends on it is named); 2 verify could not run.\n\nExamples:\n  rpger-store verify                 # quick check of the latest snapshot\n  \
rpger-store verify --deep --all     # every stored blob, rebuilt and re-hashed\n  \
rpger-store verify --deep --files --all   # and every file of every snapshot end to end\n  \
rpger-store verify --deep --all --read-data-subset 3/7   # a seventh of the packs (nightly rotation)")]
pub struct VerifyArgs {
    /// Snapshot name or `latest` (default).
    #[arg(conflicts_with = "all")]
    pub snapshot: Option<String>,
    /// Check every snapshot.
    #[arg(long)]
    pub all: bool,
    /// Read every pack (memory-mapped), decompress and re-hash every blob (rebuilding each
    /// delta from its bases): every stored byte is checked.
    #[arg(long)]
    pub deep: bool,
    /// With --deep: also re-read every file of the checked snapshots end to end and compare it
    /// with its recorded whole-file BLAKE3 (proves the manifests' chunk lists; reads every
    /// logical byte, so it takes several times longer).
    #[arg(long, requires = "deep", conflicts_with = "read_data_subset")]
    pub files: bool,
    /// With --deep: only read part N of M of the packs (by pack id; the M parts cover every pack
    /// exactly once). The end-to-end file pass is skipped.
    #[arg(long, value_name = "N/M", requires = "deep")]
    pub read_data_subset: Option<String>,
    /// Also read every database dump of the checked snapshots back and check it by its
    /// format, as the database would on load: Redis RDB (end opcode and CRC-64) and AOF
    /// (every command whole) and Redis 7's AOF manifest; MongoDB .bson files (every document,
    /// nested ones too), .metadata.json and mongodump archives (every CRC-64); SQLite
    /// databases such as Chroma's (header, then SQLite's own `PRAGMA integrity_check` on a
    /// copy in --scratch-dir). A dump that would not load is reported and exits 1.
    #[arg(long)]
    pub dumps: bool,
    /// Where --dumps copies SQLite databases for SQLite to check (needs room for the largest
    /// one) [default: $TMPDIR, else /tmp]. Never inside the store.
    #[arg(long, requires = "dumps")]
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Directory of the verify log (`backup-verify.log`, one line per run) [default: the
    /// config's `log_dir`, else /data2/rpger/logs].
    #[arg(long)]
    pub log_dir: Option<std::path::PathBuf>,
    /// How long to wait for a conflicting lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// Parses `2026-11-26_02-00-00` (UTC) or RFC 3339 into Unix nanoseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d_%H-%M-%S")
        .map(|n| n.and_utc())
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&chrono::Utc)))
        .map_err(|_| format!("invalid time {s:?}: use YYYY-MM-DD_HH-MM-SS (UTC) or RFC 3339"))?;
    t.timestamp_nanos_opt().ok_or_else(|| format!("time {s:?} is out of range"))
}

/// Parses `N/M`.
pub fn parse_subset(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--read-data-subset {s:?}: expected N/M with 1 <= N <= M, e.g. 1/7");
    let (n, m) = s.split_once('/').ok_or_else(bad)?;
    let (n, m): (u32, u32) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
    if n == 0 || m == 0 || n > m {
        return Err(bad());
    }
    Ok((n, m))
}

/// `mongodb-archive` options.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  rpger-store mongodb-archive latest | docker exec -i rpger-mongodb mongorestore --archive --drop")]
pub struct MongoArchiveArgs {
    /// Snapshot name, or `latest`.
    pub snapshot: String,
    /// The source holding the dump (a `mongodump:` source).
    #[arg(long, default_value = "mongodb")]
    pub source: String,
    /// Output file; `-` (default) is stdout.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
}

/// `import-legacy` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Legacy folders, or directories holding them (e.g. /data2/rpger/backups).
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

/// `forget` options.
#[derive(Debug, Args)]
#[command(after_help = "Within each group of snapshots with the same sources, newest first: --keep-last N keeps the N \
newest; --keep-daily/weekly/monthly N keep the newest snapshot of each of the last N days/ISO weeks/months that \
have one (UTC); --keep-within D keeps everything within D of the group's newest. The rules are a union, and the \
newest snapshot of every group is always kept. Without any --keep-* option the policy is --keep-daily 7.")]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every snapshot within this long of the group's newest, e.g. 30d, 12h, 2w, 1y.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Show what would be kept and removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune right after forgetting (what the nightly job runs).
    #[arg(long)]
    pub prune: bool,
    /// With --prune: see `prune --help`.
    #[arg(long, default_value_t = 0.1)]
    pub max_repack_ratio: f64,
    /// How long to wait for the exclusive lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `prune` options.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Most unused bytes that may stay inside partly-used packs, as a fraction of the live
    /// bytes (0.1: the store stays within 10% of what the kept snapshots need). The emptiest packs
    /// are repacked (live data copied, the pack deleted) until this holds. Packs with nothing
    /// live are always deleted.
    #[arg(long, default_value_t = 0.1)]
    pub max_repack_ratio: f64,
    /// How long to wait for the exclusive lock, e.g. 30s, 10m.
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Approximate size of one night's dumps in bytes.
    #[arg(long, default_value_t = 24_000_000)]
    pub size: u64,
    /// Nights to back up.
    #[arg(long, default_value_t = 2)]
    pub nights: u32,
}

/// Parses `30s`, `10m`, `2h`, `0`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| std::time::Duration::from_secs(n * mult))
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30s, 10m or 2h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_subset("3/7").unwrap(), (3, 7));
        assert_eq!(parse_time("1970-01-02_00-00-00").unwrap(), 86_400_000_000_000);
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert!(parse_time("yesterday").is_err());
        for bad in ["0/7", "8/7", "1/0", "x", "1/"] {
            assert!(parse_subset(bad).is_err(), "{bad}");
        }
    }
}
