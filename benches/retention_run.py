#!/usr/bin/env python3
"""Nightly retention on dump directories named YYYY-MM-DD_HH-MM-SS (e.g. gen_rpger.py --days 14):

    python3 benches/retention_run.py DATA_DIR [--work DIR] [--keep-daily 7]

Each night: `backup --time <folder name>`, then `forget --keep-daily N --prune` under
/usr/bin/time -v. Prints per night the store size, prune time and peak RSS, bytes reclaimed and the
unused (forgotten-only) bytes prune found; then verify --deep --all. Not part of CI.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time

def timed_json(cmd):
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        secs = time.monotonic() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode()}")
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t.read()).group(1))
    return secs, rss / 1024, json.loads(p.stdout)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--work", default="/tmp/rpger-retention")
    ap.add_argument("--keep-daily", type=int, default=7)
    ap.add_argument("--max-repack-ratio", default="0.1")
    ap.add_argument("--bin", default=os.path.abspath("target/release/rpger-store"))
    a = ap.parse_args()
    nights = sorted(d for d in os.listdir(a.data) if re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", d))
    shutil.rmtree(a.work, ignore_errors=True)
    store = os.path.join(a.work, "store")
    subprocess.run([a.bin, "--store", store, "init"], check=True, stdout=subprocess.DEVNULL)
    print("| night | backup s | prune s | prune peak RSS MiB | unused (forgotten-only) MiB | reclaimed MiB | store MiB |")
    print("|---|---|---|---|---|---|---|")
    sizes = []
    for i, n in enumerate(nights, 1):
        d = os.path.join(a.data, n)
        srcs = sum((["--source", f"{s}={d}/{s}"] for s in ("mongodb", "redis", "chroma")), [])
        b, _, _ = timed_json([a.bin, "--store", store, "--json", "backup", "--time", n] + srcs)
        p, rss, r = timed_json([a.bin, "--store", store, "--json", "forget", "--keep-daily", str(a.keep_daily), "--prune", "--max-repack-ratio", a.max_repack_ratio])
        pr = r["prune"]
        sizes.append(pr["bytes_after"])
        mib = lambda x: x / 1048576
        print(f"| {i} | {b:.2f} | {p:.2f} | {rss:.0f} | {mib(pr['unused_bytes']):.1f} | {mib(pr['reclaimed_bytes']):.1f} | {mib(pr['bytes_after']):.0f} |")
    if len(sizes) >= 14:
        print(f"\nstore after night 7: {sizes[6] / 1048576:.0f} MiB, after night 14: {sizes[13] / 1048576:.0f} MiB ({sizes[13] / sizes[6]:.3f}x)")
    t0 = time.monotonic()
    v = subprocess.run([a.bin, "--store", store, "--json", "verify", "--deep", "--all", "--log-dir", a.work], stdout=subprocess.PIPE)
    print(f"verify --deep --all: exit {v.returncode} in {time.monotonic() - t0:.1f} s: {json.loads(v.stdout)['summary']}")

if __name__ == "__main__":
    main()
