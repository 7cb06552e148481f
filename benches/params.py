#!/usr/bin/env python3
"""Chunk size and zstd level, chosen by measurement: store size and backup time per setting.

    python3 benches/params.py DIR [DIR ...] [--avg 8192,16384,65536] [--levels 1,3] [--bin ...]

Each DIR is one backup (back up in order into a fresh store per setting, so later DIRs dedup
against earlier ones): e.g. three nights of the shared dataset, or a source tree. Prints a
markdown table: setting, store MiB after all DIRs, total backup seconds, last-DIR seconds.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--avg", default="8192,16384,65536")
    ap.add_argument("--levels", default="1,3")
    ap.add_argument("--bin", default="target/release/rpger-store")
    a = ap.parse_args()
    logical = sum(os.path.getsize(os.path.join(r, f)) for d in a.dirs for r, _, fs in os.walk(d) for f in fs if not os.path.islink(os.path.join(r, f)))
    print(f"{len(a.dirs)} backups, {logical / 2**20:.0f} MiB logical\n")
    print("| chunk avg | zstd level | store MiB | backup s (all) | backup s (last) |")
    print("|---|---|---|---|---|")
    for avg in [int(x) for x in a.avg.split(",")]:
        for level in [int(x) for x in a.levels.split(",")]:
            work = tempfile.mkdtemp(prefix="rpger-params-")
            store = os.path.join(work, "s")
            subprocess.run([a.bin, "--store", store, "init", "--chunk-avg", str(avg), "--zstd-level", str(level)], check=True, stdout=subprocess.DEVNULL)
            times = []
            for d in a.dirs:
                t0 = time.monotonic()
                subprocess.run([a.bin, "--store", store, "backup", "--no-space-check", "--source", f"data={d}"], check=True, stdout=subprocess.DEVNULL)
                times.append(time.monotonic() - t0)
            st = json.loads(subprocess.run([a.bin, "--store", store, "--json", "stats"], check=True, stdout=subprocess.PIPE).stdout)
            print(f"| {avg // 1024} KiB | {level} | {st['store_bytes'] / 2**20:.1f} | {sum(times):.1f} | {times[-1]:.2f} |", flush=True)
            shutil.rmtree(work)

if __name__ == "__main__":
    main()
