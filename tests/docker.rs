//! Issue 5, must-show 2: containers from images built locally (no registry) — FROM scratch with
//! host binaries and their libraries: a real redis-server, and a stand-in mongodump compiled
//! here that writes a real mongodump archive — backed up through exec streams, tar streams and
//! pause/unpause; the containers run unpaused afterwards, also when the backup fails or
//! rpger-store is killed mid-read. Skipped, loudly, without a Docker engine.

use crate::common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output();
    match out {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)),
        Err(e) => (false, e.to_string()),
    }
}

/// `docker build` of an image FROM scratch holding `binaries` (host paths) with the libraries
/// they need, `files` (path in the image, content) and an empty /tmp and /data.
pub(crate) fn build_image(ctx: &Path, tag: &str, binaries: &[&str], files: &[(&str, &[u8])], entrypoint: &str) -> bool {
    let root = ctx.join("rootfs");
    let mut all: Vec<(String, String)> = vec![];
    for b in binaries {
        let (src, dest) = b.split_once('=').unwrap_or((b, b));
        all.push((src.to_string(), dest.to_string()));
        let ldd = Command::new("ldd").arg(src).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
                all.push((p.to_string(), p.to_string()));
            }
        }
    }
    for (src, dest) in &all {
        let dest = root.join(dest.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(src).unwrap(), &dest).unwrap();
    }
    for (p, content) in files {
        let dest = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, content).unwrap();
    }
    for d in ["tmp", "data"] {
        fs::create_dir_all(root.join(d)).unwrap();
        fs::set_permissions(root.join(d), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    }
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT {entrypoint}\n")).unwrap();
    let (ok, out) = docker(&["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
    if !ok {
        eprintln!("docker build failed: {out}");
    }
    ok
}

/// `rpger-store-test-redis:1`: the host's redis-server serving /data with an AOF, no RDB saves.
pub(crate) fn build_redis_image(ctx: &Path) -> bool {
    build_image(
        ctx,
        "rpger-store-test-redis:1",
        &["/usr/bin/redis-server"],
        &[],
        r#"["/usr/bin/redis-server", "--dir", "/data", "--protected-mode", "no", "--appendonly", "yes", "--save", ""]"#,
    )
}

pub(crate) fn have_docker() -> bool {
    let ok = docker(&["info"]).0;
    if !ok {
        eprintln!("WARNING: Docker test SKIPPED: no Docker engine answers `docker info` here");
    }
    ok
}

pub(crate) fn state(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Running}} {{.State.Paused}}", name]).1
}

pub(crate) struct Container(pub(crate) String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn a_paused_container_is_always_unpaused() {
    if !have_docker() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let built = build_image(&t.path().join("image"), "rpger-store-test-sleep:1", &["/bin/sleep"], &[], r#"["/bin/sleep", "3600"]"#);
    assert!(built, "could not build the test image locally");
    let data = t.path().join("chroma");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("chroma.sqlite3"), noise(5, 200 << 20)).unwrap();
    let name = format!("rpger-store-test-{}", std::process::id());
    let (started, out) = docker(&["run", "-d", "--name", &name, "-v", &format!("{}:/data", data.display()), "rpger-store-test-sleep:1"]);
    assert!(started, "docker run: {out}");
    let _c = Container(name.clone());
    assert_eq!(state(&name), "true false");
    let store = init_store(t.path());
    let spec = format!("chroma=docker-paused:{name}:{}", data.display());
    let spawn_backup = || {
        bin()
            .args(["--store", store.to_str().unwrap(), "--threads", "1", "backup", "--source", &spec])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    // a normal run: paused while read, running and unpaused afterwards
    let mut child = spawn_backup();
    let t0 = Instant::now();
    let mut seen_paused = false;
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(60) {
        seen_paused |= state(&name) == "true true";
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen_paused, "the container was never seen paused during the backup");
    assert_eq!(state(&name), "true false");
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("chroma/chroma.sqlite3")).unwrap(), fs::read(data.join("chroma.sqlite3")).unwrap());
    // killed while the container is paused: the watchdog unpauses it
    let mut child = spawn_backup();
    let t0 = Instant::now();
    while state(&name) != "true true" && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(state(&name), "true true", "never saw the container paused");
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let t0 = Instant::now();
    while state(&name) != "true false" && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(&name), "true false", "the container stayed paused after rpger-store was killed");
    // failures: a missing data dir (never paused), an unknown container; nothing committed
    let r = fails(&store, &["backup", "--source", &format!("chroma=docker-paused:{name}:/no/such/dir")], 2);
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);
    let r = fails(&store, &["backup", "--source", &format!("chroma=docker-paused:no-such-container-{name}:{}", data.display())], 2);
    assert!(r.stderr.contains("no-such-container"), "{}", r.stderr);
    assert_eq!(state(&name), "true false");
    assert_eq!(snapshot_names(&store).len(), 1);
}

/// A stand-in for mongodump: checks its arguments like the real one would be called, reads the
/// `--config` file when given (recording it in /tmp/seen-config), writes /fixture.archive (a real
/// mongodump archive) to stdout — or half of it and exit 3 while /tmp/fail exists.
pub(crate) const FAKE_MONGODUMP: &str = r#"
use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--archive") || !args.iter().any(|a| a == "--numParallelCollections=1") {
        eprintln!("fake mongodump: unexpected arguments {args:?}");
        std::process::exit(8);
    }
    if let Some(c) = args.iter().find_map(|a| a.strip_prefix("--config=")) {
        let text = std::fs::read_to_string(c).unwrap_or_default();
        std::fs::write("/tmp/seen-config", &text).unwrap();
    }
    let data = std::fs::read("/fixture.archive").unwrap();
    let mut out = std::io::stdout().lock();
    if std::path::Path::new("/tmp/fail").exists() {
        out.write_all(&data[..data.len() / 2]).unwrap();
        out.flush().unwrap();
        eprintln!("fake mongodump: connection to the server lost");
        std::process::exit(3);
    }
    out.write_all(&data).unwrap();
}
"#;

/// Compiles [`FAKE_MONGODUMP`] in `dir`; returns the executable.
pub(crate) fn build_fake_mongodump(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("fake_mongodump.rs");
    fs::write(&src, FAKE_MONGODUMP).unwrap();
    let exe = dir.join("fake_mongodump");
    let rc = Command::new("rustc").args(["-O", "-o"]).arg(&exe).arg(&src).status();
    assert!(rc.is_ok_and(|s| s.success()), "rustc could not build the stand-in mongodump");
    exe
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mongodump").join(name)).unwrap()
}

pub(crate) fn start_container(name: &str, image: &str, args: &[&str]) -> Container {
    let mut a = vec!["run", "-d", "--name", name, image];
    a.extend_from_slice(args);
    let (started, out) = docker(&a);
    assert!(started, "docker run: {out}");
    Container(name.to_string())
}

#[test]
fn mongodump_and_command_output_stream_out_of_a_container() {
    if !have_docker() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let exe = build_fake_mongodump(t.path());
    let archive = fixture("dump-w-oplog.archive");
    // Every byte value, CR/LF and NUL runs: the exec stream must be byte-exact (no TTY).
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    binary.extend_from_slice(b"\r\n\n\r\0\0\0\x1b[0m");
    binary.extend(noise(9, 3 << 20));
    let exe_entry = format!("{}=/usr/bin/mongodump", exe.display());
    let built = build_image(
        &t.path().join("image"),
        "rpger-store-test-mongo:1",
        &["/bin/sleep", "/bin/sh", "/bin/cat", "/bin/rm", "/bin/ls", &exe_entry],
        &[("/fixture.archive", &archive), ("/binary.bin", &binary)],
        r#"["/bin/sleep", "3600"]"#,
    );
    assert!(built, "could not build the test image locally");
    let name = format!("rpger-store-test-mongo-{}", std::process::id());
    let _c = start_container(&name, "rpger-store-test-mongo:1", &[]);
    let store = init_store(t.path());
    let spec = format!("mongodb=docker-mongodump:{name}");
    let secret = "mongodb://backup:s3cr\"et@db:27017/?authSource=admin";
    let run = bin()
        .args(["--store", store.to_str().unwrap(), "--json", "backup", "--source", &spec])
        .env("RPGER_MONGODB_URI", secret)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stderr}");
    assert!(!stdout.contains("s3cr") && !stderr.contains("s3cr"), "the credentials leaked into the output");
    // mongodump got the URI through its config file, which is gone afterwards.
    let (_, seen) = docker(&["exec", &name, "/bin/cat", "/tmp/seen-config"]);
    assert_eq!(seen, "uri: \"mongodb://backup:s3cr\\\"et@db:27017/?authSource=admin\"", "the config file mongodump read");
    let (_, tmp) = docker(&["exec", &name, "/bin/ls", "/tmp"]);
    assert!(!tmp.contains("rpger-store-mongodump"), "credentials file left in the container: {tmp}");
    let snaps = ok(&store, &["--json", "snapshots"]).json();
    assert!(!snaps.to_string().contains("s3cr"), "the credentials leaked into the snapshot");
    // The restore equals what the same archive gives through the local mongodump: source.
    let target = t.path().join("r1");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    let local_archive = t.path().join("local.archive");
    fs::write(&local_archive, &archive).unwrap();
    let store2 = init_store(&t.path().join("s2"));
    ok(&store2, &["backup", "--source", &format!("mongodb=mongodump:cat {}", local_archive.display())]);
    let target2 = t.path().join("r2");
    ok(&store2, &["restore", "latest", target2.to_str().unwrap()]);
    let files =
        |root: &Path| -> Vec<(Vec<u8>, blake3::Hash)> { tree(root).into_iter().filter_map(|(p, n)| n.content.map(|c| (p, c))).collect() };
    let got = files(&target.join("mongodb"));
    assert!(got.len() >= 4, "collections and metadata files: {got:?}");
    assert_eq!(got, files(&target2.join("mongodb")));

    // A generic command's stdout, byte-exact.
    ok(&store, &["backup", "--source", &format!("blob=docker-exec:{name}:cat /binary.bin"), "--stdin-name", "binary.bin"]);
    let target = t.path().join("r3");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    assert!(fs::read(target.join("blob/binary.bin")).unwrap() == binary, "the exec stream was not byte-exact");

    // mongodump failing half-way: a clear error naming the exit status and its message, nothing
    // committed; then a good run dedups against the earlier snapshot.
    let before = snapshot_names(&store).len();
    docker(&["exec", &name, "/bin/sh", "-c", "echo > /tmp/fail"]);
    let r = fails(&store, &["backup", "--source", &spec], 2);
    assert!(r.stderr.contains("exited with status 3") && r.stderr.contains("connection to the server lost"), "{}", r.stderr);
    assert!(r.stderr.contains(&name), "{}", r.stderr);
    assert_eq!(snapshot_names(&store).len(), before);
    docker(&["exec", &name, "/bin/rm", "/tmp/fail"]);
    let r = ok(&store, &["--json", "backup", "--source", &spec]).json();
    assert_eq!(r["new_chunks"], 0, "{r}");
    // A failing command, a missing container: named, nothing committed.
    let r = fails(&store, &["backup", "--source", &format!("blob=docker-exec:{name}:cat /no/such/file")], 2);
    assert!(r.stderr.contains("cat /no/such/file") && r.stderr.contains("exited with status 1"), "{}", r.stderr);
    let r = fails(&store, &["backup", "--source", "mongodb=docker-mongodump:no-such-container-rpger"], 2);
    assert!(r.stderr.contains("no-such-container-rpger"), "{}", r.stderr);
    assert_eq!(snapshot_names(&store).len(), before + 1);
    assert_eq!(state(&name), "true false");
}

#[test]
fn redis_in_a_container_bgsave_then_files_out_of_it() {
    if !have_docker() || !crate::redis::have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    assert!(build_redis_image(&t.path().join("image")), "could not build the test image locally");
    let name = format!("rpger-store-test-redis-{}", std::process::id());
    let _c = start_container(&name, "rpger-store-test-redis:1", &[]);
    let ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &name]).1;
    let rcli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli").args(["-h", &ip]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let t0 = Instant::now();
    while rcli(&["PING"]) != "PONG" {
        assert!(t0.elapsed() < Duration::from_secs(20), "redis in the container did not answer on {ip}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..300 {
        rcli(&["SET", &format!("character:{i}"), &format!("level {}", i % 20)]);
    }
    rcli(&["HSET", "campaign:7", "name", "Curse of the Deep"]);
    let store = init_store(t.path());
    ok(&store, &["backup", "--source", &format!("redis=docker-redis:{name}")]);
    let labels = &ok(&store, &["--json", "snapshots"]).json()["snapshots"][0]["labels"];
    assert!(labels["redis.keyspace.db0"].as_str().unwrap().starts_with("keys=301"), "{labels}");
    rcli(&["SET", "character:late", "after the snapshot"]);
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    let restored = target.join("redis");
    assert!(restored.join("appendonlydir").is_dir(), "the AOF directory is copied as it is");
    let fresh = crate::redis::start(&restored, &["--appendonly", "no", "--dbfilename", "dump.rdb"]);
    assert_eq!(crate::redis::cli(&fresh, &["DBSIZE"]), "301");
    assert_eq!(crate::redis::cli(&fresh, &["HGET", "campaign:7", "name"]), "Curse of the Deep");
    assert_eq!(crate::redis::cli(&fresh, &["EXISTS", "character:late"]), "0");
    drop(fresh);

    // The whole data dir copied out while the container is paused equals `docker cp` of it.
    rcli(&["BGREWRITEAOF"]);
    // The copy must not race the rewrite: wait until Redis says it is over.
    let t0 = Instant::now();
    while !rcli(&["INFO", "persistence"]).contains("aof_rewrite_in_progress:0")
        || rcli(&["INFO", "persistence"]).contains("aof_rewrite_scheduled:1")
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "the AOF rewrite in the container did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&store, &["backup", "--source", &format!("data=docker-copy:{name}:/data")]);
    assert_eq!(state(&name), "true false");
    let cp = t.path().join("cp");
    fs::create_dir(&cp).unwrap();
    assert!(docker(&["cp", &format!("{name}:/data"), cp.to_str().unwrap()]).0);
    let target = t.path().join("r2");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    let content = |root: &Path| -> Vec<(Vec<u8>, Option<blake3::Hash>)> { tree(root).into_iter().map(|(p, n)| (p, n.content)).collect() };
    assert_eq!(content(&target.join("data")), content(&cp.join("data")));
    // A missing path: a clear error, the container unpaused, nothing committed.
    let n = snapshot_names(&store).len();
    let r = fails(&store, &["backup", "--source", &format!("data=docker-copy:{name}:/no/such/dir")], 2);
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);
    assert_eq!(state(&name), "true false");
    assert_eq!(snapshot_names(&store).len(), n);
}
