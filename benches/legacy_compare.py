#!/usr/bin/env python3
"""The nightly job, rpger-store against the legacy approach (a full `cp -r` of the dumps into a
dated folder, then sync), on dump directories named YYYY-MM-DD_HH-MM-SS:

    python3 benches/legacy_compare.py DATA_DIR [--work DIR]

Per night: wall time and bytes added for both. Not part of CI.
"""
import argparse, os, re, shutil, subprocess, time

def du(p):
    return int(subprocess.run(["du", "-sb", p], stdout=subprocess.PIPE, text=True).stdout.split()[0])

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--work", default="/tmp/rpger-legacy-compare")
    ap.add_argument("--bin", default=os.path.abspath("target/release/rpger-store"))
    a = ap.parse_args()
    nights = sorted(d for d in os.listdir(a.data) if re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", d))
    shutil.rmtree(a.work, ignore_errors=True)
    legacy, store = os.path.join(a.work, "legacy"), os.path.join(a.work, "store")
    os.makedirs(legacy)
    subprocess.run([a.bin, "--store", store, "init"], check=True, stdout=subprocess.DEVNULL)
    print("| night | logical MiB | cp -r + sync s | legacy growth MiB | rpger-store backup s | store growth MiB |")
    print("|---|---|---|---|---|---|")
    mib = lambda b: b / 1048576
    tot = [0.0, 0.0]
    for n in nights:
        src = os.path.join(a.data, n)
        before_l, before_s = du(legacy), du(store)
        t0 = time.monotonic()
        subprocess.run(["bash", "-c", f"mkdir -p {legacy}/{n} && cp -r {src}/mongodb {src}/redis {src}/chroma {legacy}/{n}/ && sync"], check=True)
        tl = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run([a.bin, "--store", store, "backup", "--time", n] + sum((["--source", f"{s}={src}/{s}"] for s in ("mongodb", "redis", "chroma")), []) + ["--no-space-check"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["sync"], check=True)
        ts = time.monotonic() - t0
        tot[0] += tl
        tot[1] += ts
        print(f"| {n} | {mib(du(src)):.0f} | {tl:.2f} | {mib(du(legacy) - before_l):.0f} | {ts:.2f} | {mib(du(store) - before_s):.0f} |")
    print(f"\nafter {len(nights)} nights: legacy {mib(du(legacy)):.0f} MiB in {tot[0]:.1f} s; rpger-store {mib(du(store)):.0f} MiB in {tot[1]:.1f} s")

if __name__ == "__main__":
    main()
