//! `test-restore`: a snapshot's Redis dump is loaded by a real redis-server, whose key counts
//! must be the ones recorded at backup; a cut dump, a count that differs and sources this build
//! cannot load are each reported with the right exit code.

use crate::common::*;
use crate::redis::{cli, have_redis, start_with_aof};
use std::fs;
use std::path::Path;

fn test_restore(store: &Path, args: &[&str], code: i32) -> Run {
    let dir = store.parent().unwrap();
    let (scratch, logs) = (dir.join("scratch"), dir.join("logs"));
    fs::create_dir_all(&scratch).unwrap();
    let mut a = vec!["test-restore", "--scratch-dir", scratch.to_str().unwrap(), "--log-dir", logs.to_str().unwrap()];
    a.extend_from_slice(args);
    let r = run(store, &a);
    assert_eq!(r.code, code, "test-restore {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // The scratch copy and the server are gone, whatever the outcome.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "scratch left behind");
    r
}

#[test]
fn a_redis_snapshot_loads_into_a_real_server_with_the_recorded_key_counts() {
    if !have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let server = start_with_aof(t.path());
    for i in 0..250 {
        cli(&server, &["SET", &format!("character:{i}"), "{\"hp\":12}"]);
    }
    cli(&server, &["-n", "2", "RPUSH", "chat:1", "roll d20"]);
    let store = init_store(t.path());
    let spec = format!("redis=redis://127.0.0.1:{}", server.port);
    let snap = ok(&store, &["--json", "backup", "--source", &spec]).json()["snapshot"].as_str().unwrap().to_string();
    drop(server);

    let r = test_restore(&store, &[&snap], 0);
    assert!(r.stdout.contains("test-restore ok: ") && r.stdout.contains("db0 250 keys, db2 1 keys, as recorded at backup"), "{}", r.stdout);
    let j = test_restore(&store, &["--json", "--only", "redis"], 0).json();
    assert_eq!(j["sources"][0]["result"], "ok", "{j}");
    let log = fs::read_to_string(t.path().join("logs/backup-verify.log")).unwrap();
    assert!(log.lines().any(|l| l.contains(&format!("test-restore snapshot={snap} result=ok: 1 source(s) loaded"))), "{log}");

    // The same dump backed up with key counts it does not hold: the comparison fails.
    let restored = t.path().join("restored");
    ok(&store, &["restore", &snap, restored.to_str().unwrap()]);
    let copy = restored.join("redis");
    let label = "redis.keyspace.db0=keys=251,expires=0,avg_ttl=0";
    ok(&store, &["backup", "--source", &format!("redis={}", copy.display()), "--label", label]);
    let r = test_restore(&store, &["latest"], 1);
    assert!(r.stdout.contains("test-restore FAILED: ") && r.stdout.contains("but the backup recorded db0 251 keys"), "{}", r.stdout);

    // A dump cut in the middle: redis-server refuses it, and says why.
    let rdb = copy.join("dump.rdb");
    let b = fs::read(&rdb).unwrap();
    fs::write(&rdb, &b[..b.len() / 2]).unwrap();
    ok(&store, &["backup", "--source", &format!("redis={}", copy.display())]);
    let r = test_restore(&store, &["latest"], 1);
    assert!(r.stdout.contains("redis-server exited") && r.stdout.contains("without loading dump.rdb"), "{}", r.stdout);

    // No redis-server to run: the test could not run (exit 2), naming the binary.
    let r = test_restore(&store, &[&snap, "--redis-server", "/nonexistent/redis-server"], 2);
    assert!(r.stderr.contains("cannot run /nonexistent/redis-server"), "{}", r.stderr);
}

#[test]
fn sources_this_build_cannot_load_are_listed_and_alone_are_an_error() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mongodump/test.bar.archive");
    ok(&store, &["backup", "--source", &format!("mongodb=mongodump:cat {}", archive.display())]);
    let r = test_restore(&store, &[], 2);
    assert!(
        r.stdout.contains("test-restore not tested: ") && r.stdout.contains("mongodb: loading MongoDB dumps needs mongod"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("no source could be loaded by this build"), "{}", r.stderr);
    let r = test_restore(&store, &["--only", "redis"], 2);
    assert!(r.stderr.contains("has no source redis"), "{}", r.stderr);
}

fn leftover_test_containers() -> String {
    crate::docker::docker(&["ps", "-aq", "--filter", "label=rpger-store=test-restore"]).1
}

#[test]
fn a_redis_snapshot_loads_in_a_temporary_container_that_is_always_removed() {
    use crate::docker::{build_image, build_redis_image, have_docker};
    if !have_docker() || !have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let server = start_with_aof(t.path());
    for i in 0..120 {
        cli(&server, &["SET", &format!("session:{i}"), "x"]);
    }
    let store = init_store(t.path());
    let snap = ok(&store, &["--json", "backup", "--source", &format!("redis=redis://127.0.0.1:{}", server.port)]).json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    // The image's own entrypoint does not matter: test-restore runs `redis-server` in it.
    // One definition of the tag for every test, so parallel tests never retag it differently.
    assert!(build_redis_image(&t.path().join("image")), "could not build the test image locally");
    let r = test_restore(&store, &[&snap, "--redis-image", "rpger-store-test-redis:1", "--redis-server", "/nonexistent/redis-server"], 0);
    assert!(
        r.stdout.contains("in a temporary container of rpger-store-test-redis:1 loaded dump.rdb")
            && r.stdout.contains("db0 120 keys, as recorded at backup"),
        "{}",
        r.stdout
    );
    assert_eq!(leftover_test_containers(), "", "the temporary container was left behind");

    // A cut dump: the server in the container refuses it, and its own log says why.
    let restored = t.path().join("restored");
    ok(&store, &["restore", &snap, restored.to_str().unwrap()]);
    let rdb = restored.join("redis/dump.rdb");
    let b = fs::read(&rdb).unwrap();
    fs::write(&rdb, &b[..b.len() / 2]).unwrap();
    ok(&store, &["backup", "--source", &format!("redis={}", restored.join("redis").display())]);
    let r = test_restore(&store, &["latest", "--redis-image", "rpger-store-test-redis:1"], 1);
    assert!(r.stdout.contains("exited without loading dump.rdb") && r.stdout.contains("rpger-store-test-redis:1"), "{}", r.stdout);
    assert_eq!(leftover_test_containers(), "");

    // No such local image (none is pulled): the test could not run.
    let r = test_restore(&store, &[&snap, "--redis-image", "rpger-store-no-such-image:0"], 2);
    assert!(r.stderr.contains("rpger-store-no-such-image:0"), "{}", r.stderr);

    // rpger-store killed while the container runs (a server that never answers): the watchdog
    // removes the container.
    let hang = t.path().join("hang.sh");
    fs::write(&hang, "#!/bin/sh\nexec /bin/sleep 3600\n").unwrap();
    fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let entry = format!("{}=/usr/bin/redis-server", hang.display());
    assert!(build_image(&t.path().join("image2"), "rpger-store-test-hang:1", &["/bin/sh", "/bin/sleep", &entry], &[], r#"["/bin/sh"]"#));
    let scratch = t.path().join("scratch2");
    fs::create_dir_all(&scratch).unwrap();
    let mut child = bin()
        .arg("--store")
        .arg(&store)
        .args(["test-restore", &snap, "--redis-image", "rpger-store-test-hang:1", "--timeout", "10m", "--scratch-dir"])
        .arg(&scratch)
        .args(["--log-dir", t.path().join("logs").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while leftover_test_containers().is_empty() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "the temporary container never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let t0 = std::time::Instant::now();
    while !leftover_test_containers().is_empty() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "the watchdog did not remove the container");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
