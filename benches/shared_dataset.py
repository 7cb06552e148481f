#!/usr/bin/env python3
"""Measure rpger-store on nightly dump directories (e.g. made by the shared gen_rpger.py).

    python3 benches/shared_dataset.py DATA_DIR [--runs 3] [--bin target/release/rpger-store]

DATA_DIR holds one directory per night (sorted by name), each with mongodb/, redis/, chroma/.
Per run: a fresh store; every night backed up in order (new data on night 1, mostly duplicates
on nights 2-7), then the last night again (unchanged data). The machine's limits are measured on
night 1's files in the same run: plain read, b3sum (1 thread) and zstd -3 -T2. Prints a markdown
table of medians (min-max) and the store figures. Not part of CI (it needs ~8 GB of data).
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

def files(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names]
    return sorted(out)

def timed(cmd, **kw):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS KiB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        secs = time.monotonic() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode()}")
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t.read()).group(1))
    return secs, rss, p.stdout

def shell_secs(script):
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0

def med(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/rpger-store")
    ap.add_argument("--work", default=None, help="where stores are made (default: a temp dir)")
    a = ap.parse_args()
    nights = sorted(os.path.join(a.data, d) for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d, "mongodb")))
    if not nights:
        sys.exit(f"no night directories with mongodb/ under {a.data}")
    size = lambda d: sum(os.path.getsize(f) for f in files(d))
    sizes = [size(n) for n in nights]
    mib = lambda b: b / 1048576
    work = a.work or tempfile.mkdtemp(prefix="rpger-bench-")
    n1list = " ".join(f"'{f}'" for f in files(nights[0]))
    lim = {"cat": [], "b3sum -T1": [], "zstd -3 -T2": []}
    n1, incr, unchanged, rss_b, store_mib, ratio = [], [], [], [], [], []
    for r in range(a.runs):
        lim["cat"].append(shell_secs(f"cat {n1list} > /dev/null"))
        if shutil.which("b3sum"):
            lim["b3sum -T1"].append(shell_secs(f"b3sum --num-threads 1 {n1list}"))
        if shutil.which("zstd"):
            lim["zstd -3 -T2"].append(shell_secs(f"cat {n1list} | zstd -3 -T2 -c > /dev/null"))
        store = os.path.join(work, f"store-{r}")
        shutil.rmtree(store, ignore_errors=True)
        subprocess.run([a.bin, "--store", store, "init"], check=True, stdout=subprocess.DEVNULL)
        times = []
        for n in nights + [nights[-1]]:
            srcs = sum((["--source", f"{s}={n}/{s}"] for s in ("mongodb", "redis", "chroma")), [])
            secs, rss, _ = timed([a.bin, "--store", store, "backup"] + srcs)
            times.append(secs)
            rss_b.append(rss)
        n1.append(mib(sizes[0]) / times[0])
        incr.append(mib(sum(sizes[1:])) / sum(times[1:len(nights)]))
        unchanged.append(mib(sizes[-1]) / times[-1])
        st = json.loads(subprocess.run([a.bin, "--store", store, "--json", "stats"], check=True, stdout=subprocess.PIPE).stdout)
        store_mib.append(mib(st["store_bytes"]))
        ratio.append(st["dedup_ratio"])
        shutil.rmtree(store)
    print(f"{len(nights)} nights, {mib(sum(sizes)):.0f} MiB logical (night 1: {mib(sizes[0]):.0f} MiB); {a.runs} runs, medians (min-max); {os.cpu_count()} cores\n")
    print("| what | MiB/s |")
    print("|---|---|")
    for k, v in lim.items():
        if v:
            print(f"| limit: {k} (night 1 files) | {med([mib(sizes[0]) / s for s in v])} |")
    print(f"| rpger-store night 1 (new data) | {med(n1)} |")
    print(f"| rpger-store nights 2-{len(nights)} (incremental) | {med(incr)} |")
    print(f"| rpger-store last night again (unchanged data) | {med(unchanged)} |")
    print(f"\npeak RSS of any backup: {max(rss_b) / 1024:.0f} MiB; store after {len(nights)} nights: {med(store_mib)} MiB; dedup ratio {statistics.median(ratio):.2f}x "
          f"(store = {statistics.median(store_mib) / mib(sum(sizes)):.3f} of the logical bytes)")

if __name__ == "__main__":
    main()
