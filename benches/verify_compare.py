#!/usr/bin/env python3
"""Deep verify of rpger-store next to `restic check --read-data`, `borg check --verify-data` and
b3sum of the same logical bytes, on nightly dump directories (e.g. made by gen_rpger.py).

    python3 benches/verify_compare.py DATA_DIR [--runs 3] [--work DIR]

Each tool that is installed gets a fresh repository holding every night (restic: repository v2,
compression auto, password file; borg: -e none, zstd,3, files cache disabled; the flags of
shared/docs/PEERS.md), then the checks run interleaved, RUNS times. Prints medians (min-max) as
MiB/s of logical bytes and the ratio to the fastest peer. Not part of CI.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

def run(cmd, env=None, quiet=True):
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")

def timed(cmd, env=None):
    t0 = time.monotonic()
    run(cmd, env)
    return time.monotonic() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=os.path.abspath("target/release/rpger-store"))
    ap.add_argument("--work", default="/tmp/rpger-verify-compare")
    a = ap.parse_args()
    nights = sorted(os.path.join(a.data, d) for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d, "mongodb")))
    files = [os.path.join(r, n) for night in nights for r, _, ns in os.walk(night) for n in ns]
    logical = sum(os.path.getsize(f) for f in files) / 1048576
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    env = dict(os.environ, RESTIC_PASSWORD="bench", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_BASE_DIR=os.path.join(a.work, "borgbase"),
               RESTIC_CACHE_DIR=os.path.join(a.work, "restic-cache"))
    checks = {}
    store = os.path.join(a.work, "rpger")
    run([a.bin, "--store", store, "init"])
    for n in nights:
        run([a.bin, "--store", store, "backup"] + sum((["--source", f"{s}={n}/{s}"] for s in ("mongodb", "redis", "chroma")), []))
    checks["rpger-store verify --deep --all"] = [a.bin, "--store", store, "verify", "--deep", "--all", "--log-dir", a.work]
    if shutil.which("restic"):
        repo = os.path.join(a.work, "restic")
        run(["restic", "-r", repo, "init", "--repository-version", "2"], env)
        for n in nights:
            run(["restic", "-r", repo, "backup", "--force", "--compression", "auto", n], env)
        checks["restic check --read-data"] = ["restic", "-r", repo, "check", "--read-data"]
    else:
        print("restic not installed: skipped")
    if shutil.which("borg"):
        repo = os.path.join(a.work, "borg")
        run(["borg", "init", "-e", "none", repo], env)
        for i, n in enumerate(nights):
            run(["borg", "create", "--compression", "zstd,3", "--files-cache=disabled", f"{repo}::night{i}", n], env)
        checks["borg check --verify-data"] = ["borg", "check", "--verify-data", repo]
    else:
        print("borg not installed: skipped")
    flist = os.path.join(a.work, "files.txt")
    with open(flist, "w") as fh:
        fh.write("\0".join(files))
    if shutil.which("b3sum"):
        checks["b3sum --num-threads 1 (logical bytes)"] = ["bash", "-c", f"xargs -0 b3sum --num-threads 1 < {flist} > /dev/null"]
        checks["b3sum (2 threads, logical bytes)"] = ["bash", "-c", f"xargs -0 b3sum < {flist} > /dev/null"]
    times = {k: [] for k in checks}
    for _ in range(a.runs):
        for k, cmd in checks.items():
            times[k].append(timed(cmd, env))
    peers = [k for k in checks if k.startswith(("restic", "borg"))]
    best = min((statistics.median(times[k]) for k in peers), default=None)
    print(f"{len(nights)} snapshots, {logical:.0f} MiB logical; medians of {a.runs} (min-max); {os.cpu_count()} cores\n")
    print("| check | seconds | MiB/s of logical bytes | time vs fastest peer |")
    print("|---|---|---|---|")
    for k, ts in times.items():
        m = statistics.median(ts)
        ratio = f"{m / best:.2f}" if best else "-"
        print(f"| {k} | {m:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {logical / m:.0f} | {ratio} |")
    quick = [timed([a.bin, "--store", store, "verify", "--all", "--log-dir", a.work]) for _ in range(a.runs)]
    print(f"\nquick verify --all: {statistics.median(quick):.2f} s ({statistics.median(times['rpger-store verify --deep --all']) / statistics.median(quick):.0f}x faster than deep)")
    for k in ("restic", "borg"):
        p = os.path.join(a.work, k)
        if os.path.isdir(p):
            du = subprocess.run(["du", "-sm", p], stdout=subprocess.PIPE, text=True).stdout.split()[0]
            print(f"{k} repository: {du} MiB")
    du = subprocess.run(["du", "-sm", store], stdout=subprocess.PIPE, text=True).stdout.split()[0]
    print(f"rpger-store store: {du} MiB")

if __name__ == "__main__":
    main()
