//! Issue 5, must-show 1: Redis end to end with a real `redis-server` on 127.0.0.1 and a free
//! port: keys written, backup taken through BGSAVE, the restored dump.rdb loaded by a fresh
//! redis-server shows the same keys and values.

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn have_redis() -> bool {
    let ok = Command::new("redis-server").arg("--version").output().is_ok() && Command::new("redis-cli").arg("--version").output().is_ok();
    if !ok {
        eprintln!(
            "WARNING: redis test SKIPPED: redis-server/redis-cli not installed (scripts/test.sh installs the Debian package redis-server)"
        );
    }
    ok
}

pub(crate) fn start(dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, port };
    let t = Instant::now();
    while cli(&s, &["PING"]) != "PONG" {
        assert!(t.elapsed() < Duration::from_secs(10), "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// A server with its AOF on, in a new `redis-data` directory under `dir`.
pub(crate) fn start_with_aof(dir: &Path) -> Server {
    let data = dir.join("redis-data");
    std::fs::create_dir(&data).unwrap();
    start(&data, &["--appendonly", "yes"])
}

pub(crate) fn cli(s: &Server, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &s.port.to_string()]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_backup_through_bgsave_restores_into_a_fresh_server() {
    if !have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let server = start_with_aof(t.path());
    for i in 0..500 {
        cli(&server, &["SET", &format!("user:{i}"), &format!("{{\"name\":\"hero {i}\",\"level\":{}}}", i % 60)]);
    }
    cli(&server, &["HSET", "campaign:1", "name", "The Dragon Keep", "players", "4"]);
    cli(&server, &["RPUSH", "chat:1", "roll d20", "critical hit", "party rests"]);
    cli(&server, &["-n", "1", "SET", "feature:flags", "dice-v2"]);
    let store = init_store(t.path());
    let spec = format!("redis=redis://127.0.0.1:{}", server.port);
    let r = ok(&store, &["--json", "backup", "--source", &spec]).json();
    let snap = r["snapshot"].as_str().unwrap().to_string();
    // The keyspace is recorded in the snapshot.
    let list = ok(&store, &["--json", "snapshots"]).json();
    let labels = &list["snapshots"][0]["labels"];
    assert!(labels["redis.keyspace.db0"].as_str().unwrap().starts_with("keys=502"), "{labels}");
    assert!(labels["redis.keyspace.db1"].as_str().unwrap().starts_with("keys=1"), "{labels}");
    // A write after the backup must not appear in the restore.
    cli(&server, &["SET", "user:late", "after the snapshot"]);
    let target = t.path().join("restore");
    ok(&store, &["restore", &snap, target.to_str().unwrap()]);
    let restored = target.join("redis");
    assert!(restored.join("dump.rdb").is_file());
    assert!(restored.join("appendonlydir").is_dir(), "Redis 7 keeps its AOF in appendonlydir/");
    // A fresh server loading only the restored dump.rdb has the same keys and values.
    let fresh = start(&restored, &["--appendonly", "no", "--dbfilename", "dump.rdb"]);
    assert_eq!(cli(&fresh, &["DBSIZE"]), "502");
    assert_eq!(cli(&fresh, &["GET", "user:7"]), "{\"name\":\"hero 7\",\"level\":7}");
    assert_eq!(cli(&fresh, &["HGET", "campaign:1", "name"]), "The Dragon Keep");
    assert_eq!(cli(&fresh, &["LRANGE", "chat:1", "0", "-1"]), "roll d20\ncritical hit\nparty rests");
    assert_eq!(cli(&fresh, &["-n", "1", "GET", "feature:flags"]), "dice-v2");
    assert_eq!(cli(&fresh, &["EXISTS", "user:late"]), "0");
    drop(server);
    // A server that is gone fails the run, naming it; nothing is committed.
    let r = fails(&store, &["backup", "--source", &spec], 2);
    assert!(r.stderr.contains("cannot connect to redis 127.0.0.1"), "{}", r.stderr);
    assert_eq!(ok(&store, &["--json", "snapshots"]).json()["snapshots"].as_array().unwrap().len(), 1);
}
