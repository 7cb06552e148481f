//! Issue 5, must-show 2 (the pause part): a container built locally (no registry), its
//! bind-mounted data read while it is paused; running and unpaused afterwards, also when the
//! backup fails or rpger-store is killed mid-read. Skipped, loudly, without a Docker engine.

use crate::common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output();
    match out {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)),
        Err(e) => (false, e.to_string()),
    }
}

/// `docker build` of an image holding only the host's /bin/sleep and the libraries it needs.
fn build_image(ctx: &Path) -> bool {
    let root = ctx.join("rootfs");
    let ldd = Command::new("ldd").arg("/bin/sleep").output().unwrap();
    let mut files = vec!["/bin/sleep".to_string()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in &files {
        let dest = root.join(f.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(f).unwrap(), &dest).unwrap();
    }
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/bin/sleep\", \"3600\"]\n").unwrap();
    let (ok, out) = docker(&["build", "-q", "-t", "rpger-store-test-sleep:1", ctx.to_str().unwrap()]);
    if !ok {
        eprintln!("docker build failed: {out}");
    }
    ok
}

fn state(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Running}} {{.State.Paused}}", name]).1
}

struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn a_paused_container_is_always_unpaused() {
    if !docker(&["info"]).0 {
        eprintln!("WARNING: Docker test SKIPPED: no Docker engine answers `docker info` here");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    assert!(build_image(&t.path().join("image")), "could not build the test image locally");
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
