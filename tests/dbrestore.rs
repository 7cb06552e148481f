//! `restore-db`: a snapshot put back into the live databases it was taken from, in containers
//! built here (no registry): a real redis-server with its data dir bind-mounted, a directory a
//! container bind-mounts (Chroma's layout), and MongoDB through stand-in mongodump and
//! mongorestore programs (no mongod can be installed here) that record what they were fed.
//! Every test also shows that nothing is touched without --yes, and that what was replaced is
//! kept. Skipped, loudly, without a Docker engine.

use crate::common::*;
use crate::docker::{build_fake_mongodump, build_image, build_redis_image, docker, have_docker, state, Container};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `docker run -d --name NAME -v HOSTDIR:MOUNT IMAGE`.
fn run_with_mount(name: &str, image: &str, host_dir: &Path, mount: &str) -> Container {
    let v = format!("{}:{mount}", host_dir.display());
    let (started, out) = docker(&["run", "-d", "--name", name, "-v", &v, image]);
    assert!(started, "docker run: {out}");
    Container(name.to_string())
}

fn ip_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name]).1
}

fn rcli(name: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", &ip_of(name)]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for_redis(name: &str) {
    let t0 = Instant::now();
    while rcli(name, &["PING"]) != "PONG" {
        assert!(t0.elapsed() < Duration::from_secs(20), "redis in container {name} did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_plain_directory_is_swapped_for_the_snapshot_and_the_old_one_kept() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("data").join("redis");
    fs::create_dir_all(live.join("appendonlydir")).unwrap();
    fs::write(live.join("dump.rdb"), noise(3, 200_000)).unwrap();
    fs::write(live.join("appendonlydir/appendonly.aof.1.incr.aof"), b"*1\r\n$4\r\nPING\r\n").unwrap();
    let store = init_store(t.path());
    let spec = format!("redis={}", live.display());
    let logs = t.path().join("logs");
    ok(&store, &["backup", "--source", &spec]);
    let reference = t.path().join("reference");
    ok(&store, &["restore", "latest", reference.to_str().unwrap()]);
    fs::write(live.join("dump.rdb"), b"newer").unwrap();
    fs::write(live.join("extra"), b"x").unwrap();
    let changed = tree(&live);
    let args = |yes: bool| {
        let mut a = vec!["restore-db".to_string(), "--source".into(), spec.clone(), "--log-dir".into(), logs.display().to_string()];
        a.extend(yes.then(|| "--yes".to_string()));
        a
    };
    fails(&store, &args(false), 2);
    assert_eq!(tree(&live), changed);
    let r = ok(&store, &args(true));
    assert!(r.stdout.contains("replaced by the snapshot's 2 files"), "{}", r.stdout);
    assert_eq!(tree(&live), tree(&reference.join("redis")));
    let siblings = files_in(live.parent().unwrap());
    assert_eq!(siblings.len(), 2, "{siblings:?}");
    assert_eq!(tree(&live.parent().unwrap().join(&siblings[1])), changed);
    // From the config file, as the nightly job backs up: `--only` picks one source, the others
    // are left alone.
    let other = t.path().join("data").join("chroma");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("chroma.sqlite3"), b"night 1").unwrap();
    let config = t.path().join("config.toml");
    let toml = format!(
        "store = \"{}\"\nlog_dir = \"{}\"\n[[source]]\nname = \"redis\"\npath = \"{}\"\n[[source]]\nname = \"chroma\"\npath = \"{}\"\n",
        store.display(),
        logs.display(),
        live.display(),
        other.display()
    );
    fs::write(&config, toml).unwrap();
    let cfg = ["--config", config.to_str().unwrap()];
    ok(&store, &[&cfg[..], &["backup"]].concat());
    fs::write(live.join("dump.rdb"), b"changed again").unwrap();
    fs::write(other.join("chroma.sqlite3"), b"night 2").unwrap();
    let r = ok(&store, &[&cfg[..], &["restore-db", "--only", "redis", "--yes"]].concat());
    assert!(r.stdout.contains("restored redis") && !r.stdout.contains("chroma"), "{}", r.stdout);
    assert_eq!(tree(&live), tree(&reference.join("redis")));
    assert_eq!(fs::read(other.join("chroma.sqlite3")).unwrap(), b"night 2", "a source not asked for was touched");
    let r = fails(&store, &[&cfg[..], &["restore-db", "--only", "mongodb", "--yes"]].concat(), 2);
    assert!(r.stderr.contains("mongodb"), "{}", r.stderr);
    let log = fs::read_to_string(logs.join("restore.log")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("source=redis result=ok")).count(), 2, "{log}");

    // A file source, a command source: refused up front with what to do instead.
    let r = fails(&store, &["restore-db", "--yes", "--source", &format!("redis={}", live.join("dump.rdb").display())], 2);
    assert!(r.stderr.contains("not a directory") && r.stderr.contains("nothing was touched"), "{}", r.stderr);
    let r = fails(&store, &["restore-db", "--yes", "--source", "redis=cmd:cat /dev/null"], 2);
    assert!(r.stderr.contains("not supported"), "{}", r.stderr);
    // A snapshot that does not exist.
    let r = fails(&store, &["restore-db", "2020-01-01_00-00-00", "--yes", "--source", &spec], 2);
    assert!(r.stderr.contains("2020-01-01_00-00-00"), "{}", r.stderr);
    assert_eq!(tree(&live), tree(&reference.join("redis")));
}

#[test]
fn redis_in_a_container_gets_the_snapshot_back_and_loads_the_recorded_keys() {
    if !have_docker() || !crate::redis::have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    assert!(build_redis_image(&t.path().join("image")), "could not build the test image locally");
    let data = t.path().join("redis-data");
    fs::create_dir(&data).unwrap();
    let name = format!("rpger-store-test-dbrestore-redis-{}", std::process::id());
    let _c = run_with_mount(&name, "rpger-store-test-redis:1", &data, "/data");
    wait_for_redis(&name);
    for i in 0..300 {
        rcli(&name, &["SET", &format!("character:{i}"), &format!("level {}", i % 20)]);
    }
    rcli(&name, &["HSET", "campaign:7", "name", "Curse of the Deep"]);
    // A 3 MiB value that does not compress: the files cross the engine stream in many frames.
    let blob = noise(7, 3 << 20);
    let mut c = Command::new("redis-cli")
        .args(["-h", &ip_of(&name), "-x", "SET", "blob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&blob).unwrap();
    assert!(c.wait().unwrap().success());
    let store = init_store(t.path());
    let spec = format!("redis=docker-redis:{name}");
    ok(&store, &["backup", "--source", &spec]);
    // The night after: the cache was flushed and refilled with other keys.
    rcli(&name, &["FLUSHALL"]);
    for i in 0..5 {
        rcli(&name, &["SET", &format!("session:{i}"), "new"]);
    }
    let (keep, logs) = (t.path().join("kept"), t.path().join("logs"));
    let args = |yes: bool| {
        let mut a =
            vec!["restore-db", "latest", "--source", &spec, "--keep-dir", keep.to_str().unwrap(), "--log-dir", logs.to_str().unwrap()];
        if yes {
            a.push("--yes");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Without --yes: the plan, and nothing touched.
    let r = fails(&store, &args(false), 2);
    assert!(r.stdout.contains(&format!("stop container {name}")), "{}", r.stdout);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(rcli(&name, &["DBSIZE"]), "5");
    assert!(!keep.exists());
    // A source the snapshot lacks, and one this build cannot put back: refused, nothing touched.
    let r = fails(&store, &["restore-db", "latest", "--yes", "--source", &format!("cache=docker-redis:{name}")], 2);
    assert!(r.stderr.contains("has no source cache"), "{}", r.stderr);
    let r = fails(&store, &["restore-db", "latest", "--yes", "--source", "redis=redis://127.0.0.1:1"], 2);
    assert!(r.stderr.contains("not supported") && r.stderr.contains("restore --only redis"), "{}", r.stderr);
    assert_eq!(rcli(&name, &["DBSIZE"]), "5");
    // A paused container (someone else's backup running): refused before anything is touched.
    assert!(docker(&["pause", &name]).0);
    let r = fails(&store, &args(true), 2);
    assert!(r.stderr.contains("is paused") && r.stderr.contains("nothing was touched"), "{}", r.stderr);
    assert!(docker(&["unpause", &name]).0);
    assert_eq!(rcli(&name, &["DBSIZE"]), "5");
    assert!(!keep.exists());

    let r = ok(&store, &args(true));
    assert!(r.stdout.contains("db0 302 keys, as recorded at backup"), "{}", r.stdout);
    assert_eq!(state(&name), "true false");
    wait_for_redis(&name);
    assert_eq!(rcli(&name, &["DBSIZE"]), "302");
    let got = Command::new("redis-cli").args(["-h", &ip_of(&name), "GET", "blob"]).output().unwrap().stdout;
    assert!(got.len() == blob.len() + 1 && got[..blob.len()] == blob[..], "the 3 MiB value did not come back");
    assert_eq!(rcli(&name, &["HGET", "campaign:7", "name"]), "Curse of the Deep");
    assert_eq!(rcli(&name, &["EXISTS", "session:0"]), "0");
    // What Redis held before is kept as a tar of its data directory, holding the flushed night.
    let kept = files_in(&keep);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let listing = Command::new("tar").arg("tf").arg(keep.join(&kept[0])).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("appendonlydir/"), "{}", String::from_utf8_lossy(&listing.stdout));
    let log = fs::read_to_string(logs.join("restore.log")).unwrap();
    assert!(log.contains("source=redis result=ok"), "{log}");
}

#[test]
fn a_bind_mounted_directory_is_swapped_with_its_container_stopped_and_the_old_one_kept() {
    if !have_docker() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let built =
        build_image(&t.path().join("image"), "rpger-store-test-sleep-cat:1", &["/bin/sleep", "/bin/cat"], &[], r#"["/bin/sleep", "3600"]"#);
    assert!(built, "could not build the test image locally");
    // Chroma's layout, owned by uid 1000 as in the stack.
    let live = t.path().join("rpger").join("chroma");
    let seg = live.join("8d1c2a44-segment");
    fs::create_dir_all(&seg).unwrap();
    fs::write(live.join("chroma.sqlite3"), noise(1, 300_000)).unwrap();
    fs::write(seg.join("data_level0.bin"), noise(2, 100_000)).unwrap();
    fs::write(seg.join("header.bin"), b"header").unwrap();
    std::os::unix::fs::symlink("data_level0.bin", seg.join("link.bin")).unwrap();
    fs::set_permissions(seg.join("header.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    for p in [&live, &seg, &live.join("chroma.sqlite3"), &seg.join("data_level0.bin"), &seg.join("header.bin")] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let name = format!("rpger-store-test-dbrestore-dir-{}", std::process::id());
    let _c = run_with_mount(&name, "rpger-store-test-sleep-cat:1", &live, "/chroma");
    let store = init_store(t.path());
    let spec = format!("chroma=docker-paused:{name}:{}", live.display());
    ok(&store, &["backup", "--source", &spec]);
    let reference = t.path().join("reference");
    ok(&store, &["restore", "latest", reference.to_str().unwrap()]);
    // The next day: a file gone, one changed, one added.
    fs::remove_file(seg.join("header.bin")).unwrap();
    fs::write(live.join("chroma.sqlite3"), b"a different database").unwrap();
    fs::write(live.join("new-segment.bin"), b"added").unwrap();
    let changed = tree(&live);

    // A damaged store: the restore stops before the live directory or the container is touched.
    let damaged = t.path().join("damaged");
    Command::new("cp").arg("-a").arg(&store).arg(&damaged).status().unwrap();
    for pack in walk_files(&damaged.join("packs")) {
        let mut b = fs::read(&pack).unwrap();
        b[40] ^= 0x10;
        fs::write(&pack, b).unwrap();
    }
    // The container ignores SIGTERM (a sleep as PID 1): a short grace keeps the test quick.
    let quick = ["--stop-timeout", "2s"];
    let r = run(
        &damaged,
        &[&["restore-db", "latest", "--yes", "--source", &spec, "--log-dir", t.path().join("logs").to_str().unwrap()][..], &quick].concat(),
    );
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("FAILED chroma") && r.stderr.contains("live data was not touched"), "{}", r.stderr);
    assert_eq!(tree(&live), changed);
    assert_eq!(state(&name), "true false");
    assert_eq!(files_in(live.parent().unwrap()), ["chroma"], "no staging copy or kept copy is left");

    let r = ok(
        &store,
        &[&["restore-db", "latest", "--yes", "--source", &spec, "--log-dir", t.path().join("logs").to_str().unwrap()][..], &quick].concat(),
    );
    assert!(r.stdout.contains(&format!("container {name} stopped and started again")), "{}", r.stdout);
    // Exactly the backed-up tree: bytes, modes, owners, times, the symlink; the added file gone.
    assert_eq!(tree(&live), tree(&reference.join("chroma")));
    assert_eq!(state(&name), "true false");
    // The restarted container sees the restored directory, not the one moved aside.
    let seen = Command::new("docker").args(["exec", &name, "/bin/cat", "/chroma/chroma.sqlite3"]).output().unwrap();
    assert!(seen.stdout == noise(1, 300_000), "the container does not see the restored file");
    // The replaced directory is kept beside it, as it was.
    let siblings = files_in(live.parent().unwrap());
    assert_eq!(siblings.len(), 2, "{siblings:?}");
    assert!(siblings[1].starts_with("chroma.before-restore-"), "{siblings:?}");
    assert_eq!(tree(&live.parent().unwrap().join(&siblings[1])), changed);
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Records its arguments and its standard input; fails while /tmp/fail-restore exists.
const FAKE_MONGORESTORE: &str = "#!/bin/sh
echo \"$@\" > /tmp/mongorestore-args
if [ -e /tmp/fail-restore ]; then
  cat > /dev/null
  echo 'Failed: rpger.characters: error connecting to host: connection refused' >&2
  exit 1
fi
cat > /tmp/received.archive
echo '5 document(s) restored successfully. 0 document(s) failed to restore.' >&2
";

#[test]
fn mongodb_in_a_container_is_dumped_aside_then_fed_the_snapshot_archive() {
    if !have_docker() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let exe = build_fake_mongodump(t.path());
    // A mongodump archive of several MiB (the demo's BSON collections, exported by
    // `mongodb-archive`), so the archive crosses the engine stream in many frames both ways.
    let demo = t.path().join("demo");
    rpger_engine::demo::Dataset::new(5, 12_000_000).write(&demo).unwrap();
    let s0 = init_store(&t.path().join("s0"));
    ok(&s0, &["backup", "--source", &format!("mongodb={}", demo.join("mongodb").display())]);
    let big = t.path().join("big.archive");
    ok(&s0, &["mongodb-archive", "latest", "-o", big.to_str().unwrap()]);
    let archive = fs::read(&big).unwrap();
    assert!(archive.len() > 3 << 20, "{} bytes", archive.len());
    let exe_entry = format!("{}=/usr/bin/mongodump", exe.display());
    let script = t.path().join("mongorestore");
    fs::write(&script, FAKE_MONGORESTORE).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let script_entry = format!("{}=/usr/bin/mongorestore", script.display());
    let built = build_image(
        &t.path().join("image"),
        "rpger-store-test-mongorestore:1",
        &["/bin/sleep", "/bin/sh", "/bin/cat", "/bin/rm", "/bin/ls", &exe_entry, &script_entry],
        &[("/fixture.archive", &archive)],
        r#"["/bin/sleep", "3600"]"#,
    );
    assert!(built, "could not build the test image locally");
    let name = format!("rpger-store-test-dbrestore-mongo-{}", std::process::id());
    let (started, out) = docker(&["run", "-d", "--name", &name, "rpger-store-test-mongorestore:1"]);
    assert!(started, "docker run: {out}");
    let _c = Container(name.clone());
    let store = init_store(t.path());
    let spec = format!("mongodb=docker-mongodump:{name}");
    ok(&store, &["backup", "--source", &spec]);
    let (keep, logs) = (t.path().join("kept"), t.path().join("logs"));
    let args =
        ["restore-db", "latest", "--yes", "--source", &spec, "--keep-dir", keep.to_str().unwrap(), "--log-dir", logs.to_str().unwrap()];
    let first =
        bin().arg("--store").arg(&store).args(args).env("RPGER_MONGODB_URI", "mongodb://restorer:s3cret@db:27017/").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(first.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("5 document(s) restored successfully"), "{stdout}");
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"), "the credentials leaked");
    // mongorestore got --archive --drop, the URI through a config file that is gone afterwards,
    // and exactly the archive `mongodb-archive` writes for the snapshot.
    let (_, restore_args) = docker(&["exec", &name, "/bin/cat", "/tmp/mongorestore-args"]);
    assert!(restore_args.starts_with("--archive --drop --config=/tmp/rpger-store-mongorestore-"), "{restore_args}");
    let (_, tmp) = docker(&["exec", &name, "/bin/ls", "/tmp"]);
    assert!(!tmp.contains("rpger-store-mongo"), "credentials file left in the container: {tmp}");
    let received = Command::new("docker").args(["exec", &name, "/bin/cat", "/tmp/received.archive"]).output().unwrap().stdout;
    let exported = t.path().join("exported.archive");
    ok(&store, &["mongodb-archive", "latest", "-o", exported.to_str().unwrap()]);
    assert!(received == fs::read(&exported).unwrap(), "mongorestore was not fed the snapshot's archive");
    // Before that, what the database held was dumped into the keep directory.
    let kept = files_in(&keep);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(fs::read(keep.join(&kept[0])).unwrap() == archive, "the kept dump is not what mongodump wrote");

    // mongorestore failing: named with its message, exit 1.
    docker(&["exec", &name, "/bin/sh", "-c", "echo > /tmp/fail-restore"]);
    let r = run(&store, &args);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("exited with status 1") && r.stderr.contains("connection refused") && r.stderr.contains(&name),
        "{}",
        r.stderr
    );
}
