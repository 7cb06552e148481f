#!/usr/bin/env python3
"""Side-by-side benchmark: rpger-store against restic, borg, rustic and bupstash on the same nights.

    python3 benches/compare.py DATA_DIR [--runs 3] [--tools rpger-store,rpger-store-l3,restic,borg,rustic,bupstash]
                               [--bin target/release/rpger-store] [--work DIR] [--out FILE.md] [--restores K]

DATA_DIR holds one directory per night (sorted by name), each with mongodb/, redis/, chroma/
(e.g. made by gen_rpger.py). Each run measures the machine's limits first (cat, b3sum, zstd,
cp -r + sync, on night 1's files) and then, for every installed tool, in a fresh repository:
every night backed up in order (files touched first and read once, so the cache is warm and no
tool can skip a file by its mtime), a full check that reads all data, a restore of the last night
into an empty directory (compared with `diff -r`, not timed) and the repository size. With
--restores K every repository is kept until all tools have run and restored K - 1 more times,
the tools taking turns; the report adds the median of the K restores (one restore swings by up
to 2 x on these VMs with the page cache's state, whichever the tool). Every
command runs under /usr/bin/time -v (wall time, peak RSS).

Every tool gets the same treatment against the VM's memory: memory is touched and freed right
before night 1 and before the restore (see warm_memory), and the tools take turns going first
in a round.

Fairness (as in the peers' published measurement): restic/rustic/bupstash encrypt (they cannot
turn it off), borg runs with `-e none`; the peers compress with zstd level 3 (restic `auto`, borg
`--compression zstd,3`, rustic's and bupstash's default); rpger-store runs at its default (level 2 for whole
chunks, chosen by measurement) and, as `rpger-store-l3`, at level 3 (left out of the ratios);
restic/rustic `--force`, borg `--files-cache=disabled`, bupstash `--no-send-log`. bupstash has
no full check: its "check" is a `get` of the last snapshot (marked, not compared).

Prints one markdown table of medians over the runs, with same-run ratios of rpger-store to the
best peer for each metric (> 1 means rpger-store is better), then the limits. Not part of CI.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time, platform, datetime

SOURCES = ("mongodb", "redis", "chroma")


def files(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names]
    return sorted(out)


def tree_bytes(d):
    return sum(os.path.getsize(f) for f in files(d))


def du(d):
    return sum(os.path.getsize(f) for f in files(d) if not os.path.islink(f))


def timed(cmd, cwd=None, env=None, stdout=subprocess.DEVNULL):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MiB). Exits on failure."""
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", t.name] + cmd, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
        secs = time.monotonic() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t.read()).group(1)) / 1024
    return secs, rss


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode()[-2000:]}")
    return p.stdout.decode()


def sh(script):
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


class Tool:
    """One backup program: how to init, back up a night, check, restore."""
    name = ""
    comparable_check = True

    def __init__(self, work):
        self.work = work
        self.repo = os.path.join(work, "repo")
        self.env = dict(os.environ)

    def available(self):
        return shutil.which(self.exe) is not None

    def version(self):
        return run([self.exe, "--version"]).strip().splitlines()[0].split()[-1]

    def restored(self, out, night):
        """Where the restored copy of `night` is under `out`."""
        return os.path.join(out, night.lstrip("/"))


class RpgerStore(Tool):
    name = "rpger-store"

    def __init__(self, work, exe, level=None, name="rpger-store"):
        super().__init__(work)
        self.exe = os.path.abspath(exe)
        self.level = level
        self.name = name

    def available(self):
        return os.path.exists(self.exe)

    def init(self):
        level = ["--zstd-level", str(self.level)] if self.level else []
        run([self.exe, "--store", self.repo, "init"] + level)

    def backup(self, night, i):
        return [self.exe, "--store", self.repo, "backup", "--no-space-check"] + sum((["--source", f"{s}={night}/{s}"] for s in SOURCES), [])

    def check(self):
        return [self.exe, "--store", self.repo, "verify", "--deep", "--all"]

    def restore(self, out, night):
        return [self.exe, "--store", self.repo, "restore", "latest", out]

    def restored(self, out, night):
        return out


class Restic(Tool):
    name, exe = "restic", "restic"

    def version(self):
        return run(["restic", "version"]).split()[1]

    def init(self):
        pw = os.path.join(self.work, "pw")
        open(pw, "w").write("bench\n")
        self.base = ["restic", "-r", self.repo, "--password-file", pw, "--cache-dir", os.path.join(self.work, "cache"), "-q"]
        run(self.base + ["init", "--repository-version", "2"])

    def backup(self, night, i):
        return self.base + ["backup", "--force", "--compression", "auto", night]

    def check(self):
        return self.base + ["check", "--read-data"]

    def restore(self, out, night):
        return self.base + ["restore", "latest", "--target", out]


class Rustic(Tool):
    name, exe = "rustic", "rustic"

    def init(self):
        pw = os.path.join(self.work, "pw")
        open(pw, "w").write("bench\n")
        self.base = ["rustic", "-r", self.repo, "--password-file", pw, "--no-progress", "--cache-dir", os.path.join(self.work, "cache")]
        run(self.base + ["init"], env=self.env)

    def backup(self, night, i):
        return self.base + ["backup", "--force", night]

    def check(self):
        return self.base + ["check", "--read-data"]

    def restore(self, out, night):
        return self.base + ["restore", "latest", out]


class Borg(Tool):
    name, exe = "borg", "borg"

    def init(self):
        self.env.update(BORG_BASE_DIR=os.path.join(self.work, "borgbase"), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        run(["borg", "init", "-e", "none", self.repo], env=self.env)

    def backup(self, night, i):
        return ["borg", "create", "--compression", "zstd,3", "--files-cache=disabled", f"{self.repo}::night{i}", night]

    def check(self):
        return ["borg", "check", "--verify-data", self.repo]

    def restore(self, out, night):
        self.last = out
        return ["borg", "extract", f"{self.repo}::night{self.nights}"]


class Bupstash(Tool):
    name, exe = "bupstash", "bupstash"
    comparable_check = False

    def init(self):
        self.key = os.path.join(self.work, "key")
        self.env.update(BUPSTASH_REPOSITORY=self.repo, BUPSTASH_KEY=self.key, BUPSTASH_QUERY_CACHE=os.path.join(self.work, "qcache"))
        run(["bupstash", "init"], env=self.env)
        run(["bupstash", "new-key", "-o", self.key], env=self.env)

    def backup(self, night, i):
        return ["bupstash", "put", "--no-send-log", f"night={i}", night]

    def check(self):
        # No full-repository verify exists: a get of the last night (decrypts and checks only it).
        return ["bash", "-c", f"bupstash get night={self.nights} > /dev/null"]

    def restore(self, out, night):
        return ["bupstash", "restore", "--into", out, f"night={self.nights}"]

    def restored(self, out, night):
        return out


def measure_tool(tool, nights, sizes, keep=False):
    """One fresh repository: every night, check, restore. Returns a dict of figures. With
    `keep` the repository stays for `restore_again`."""
    shutil.rmtree(tool.work, ignore_errors=True)
    os.makedirs(tool.work)
    tool.nights = len(nights)
    tool.init()
    times, rss_b, growth, last = [], [], [], 0
    for i, night in enumerate(nights, 1):
        for f in files(night):
            os.utime(f)
        sh(f"cat $(find '{night}' -type f) > /dev/null")
        if i == 1:
            warm_memory(2 << 30)
        secs, rss = timed(tool.backup(night, i), env=tool.env)
        times.append(secs)
        rss_b.append(rss)
        size = du(tool.repo)
        growth.append(size - last)
        last = size
    check_s, check_rss = timed(tool.check(), env=tool.env)
    restore_s, restore_rss, out = timed_restore(tool, nights[-1])
    got = tool.restored(out, nights[-1])
    d = subprocess.run(["diff", "-rq", nights[-1], got], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if d.returncode != 0:
        sys.exit(f"{tool.name}: the restore differs from {nights[-1]}:\n{d.stdout.decode()[:2000]}")
    shutil.rmtree(out)
    mib = 1 << 20
    r = {
        "night1": sizes[0] / mib / times[0],
        "incr": sum(sizes[1:]) / mib / sum(times[1:]) if len(nights) > 1 else float("nan"),
        "check_s": check_s,
        "restore": sizes[-1] / mib / restore_s,
        "store": last / mib,
        "rss_backup": max(rss_b),
        "rss_check": check_rss,
        "rss_restore": restore_rss,
        "growth": [g / mib for g in growth],
        "restore_all": [restore_s],
    }
    if not keep:
        shutil.rmtree(tool.work)
    return r


def timed_restore(tool, night):
    """Restores `night` into an empty directory after warming memory; returns (seconds, peak
    RSS MiB, the directory)."""
    out = os.path.join(tool.work, "restore")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    warm_memory(2 << 30)
    secs, rss = timed(tool.restore(out, night), cwd=out, env=tool.env)
    return secs, rss, out


def restore_again(tool, night):
    """One more timed restore of the last night from the repository `measure_tool` kept."""
    secs, _, out = timed_restore(tool, night)
    shutil.rmtree(out)
    return secs


def limits(nights):
    n1 = " ".join(f"'{f}'" for f in files(nights[0]))
    tmp = tempfile.mkdtemp(prefix="rpger-limits-")
    z = os.path.join(tmp, "n1.zst")
    out = {
        "cat": sh(f"cat {n1} > /dev/null"),
        "b3sum 1 thread": sh(f"b3sum --num-threads 1 {n1} > /dev/null"),
        "b3sum 2 threads": sh(f"b3sum {n1} > /dev/null"),
        "zstd -1 -T1": sh(f"cat {n1} | zstd -q -1 -T1 -c > /dev/null"),
        "zstd -3 -T1": sh(f"cat {n1} | zstd -q -3 -T1 -c > /dev/null"),
        "zstd -3 -T2": sh(f"cat {n1} | zstd -q -3 -T2 -c > '{z}'"),
    }
    out["zstd -d (1 thread)"] = sh(f"zstd -q -d -c '{z}' > /dev/null")
    out["cp -r + sync"] = sh(f"cp -r '{nights[0]}' '{tmp}/copy' && sync")
    shutil.rmtree(tmp)
    return out


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def warm_memory(most=8 << 30):
    """Touches a third of the available memory (at most `most` bytes), then frees it. On this VM
    memory free for a while costs a hypervisor fault per page on its next use (free page
    reporting): the first restore to grow the page cache ran at half speed with 3 s of system
    time, whichever tool it was. Pages freed just before a timed command are cheap again."""
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    n = min(avail // 3, 8 << 30)
    if n <= 0:
        return
    buf = bytearray(n)
    for i in range(0, n, 4096):
        buf[i] = 1
    del buf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="rpger-store,rpger-store-l3,restic,borg,rustic,bupstash")
    ap.add_argument("--bin", default="target/release/rpger-store")
    ap.add_argument("--work", default=None, help="where repositories are made (default: a temp dir)")
    ap.add_argument("--out", default=None, help="also write the report to this markdown file")
    ap.add_argument("--restores", type=int, default=1,
                    help="restores of the last night per tool and run (the tools taking turns after all have backed up); "
                         "the report adds their median (default 1: one restore, as before)")
    a = ap.parse_args()
    if a.restores < 1:
        sys.exit("--restores must be at least 1")
    for need in ("/usr/bin/time", "b3sum", "zstd", "diff"):
        if not shutil.which(need) and not os.path.exists(need):
            sys.exit(f"{need} is missing (apt-get install time b3sum zstd diffutils)")
    nights = sorted(os.path.abspath(os.path.join(a.data, d)) for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d, "mongodb")))
    if not nights:
        sys.exit(f"no night directories with mongodb/ under {a.data}")
    sizes = [tree_bytes(n) for n in nights]
    work = a.work or tempfile.mkdtemp(prefix="rpger-compare-")
    makers = {
        "rpger-store": lambda w: RpgerStore(w, a.bin),
        "rpger-store-l3": lambda w: RpgerStore(w, a.bin, level=3, name="rpger-store-l3"),
        "restic": Restic, "borg": Borg, "rustic": Rustic, "bupstash": Bupstash,
    }
    tools = []
    for name in a.tools.split(","):
        t = makers[name](os.path.join(work, name))
        if t.available():
            tools.append(name)
        else:
            print(f"NOTE: {name} is not installed; left out of this comparison", file=sys.stderr)
    results = {t: [] for t in tools}
    lims = []
    warm_memory()
    for r in range(a.runs):
        lims.append(limits(nights))
        # A different tool goes first in each round: whoever first grows the page cache past
        # its high-water mark pays the VM's first touch of that memory (seen as one restore in
        # three at half speed, always in round 1, always the first tool).
        k = r % len(tools) if tools else 0
        order = tools[k:] + tools[:k]
        kept = {}
        for name in order:
            print(f"run {r + 1}/{a.runs}: {name}", file=sys.stderr)
            kept[name] = makers[name](os.path.join(work, name))
            res = measure_tool(kept[name], nights, sizes, keep=a.restores > 1)
            print(f"  {name}: {res}", file=sys.stderr)
            results[name].append(res)
        # More restores of every repository, the tools taking turns (each turn starting with
        # the next tool), so that a slow spell of the VM falls on all of them alike.
        for j in range(1, a.restores):
            for name in order[j % len(order):] + order[:j % len(order)]:
                secs = restore_again(kept[name], nights[-1])
                results[name][-1]["restore_all"].append(secs)
                print(f"  {name}: restore {j + 1}/{a.restores} {secs:.2f} s", file=sys.stderr)
        for name in order:
            res = results[name][-1]
            res["restore_med"] = sizes[-1] / (1 << 20) / med(res["restore_all"])
            if a.restores > 1:
                shutil.rmtree(kept[name].work, ignore_errors=True)
    versions = {}
    for n in tools:
        try:
            versions[n] = makers[n](os.path.join(work, n)).version()
        except SystemExit:
            versions[n] = "?"
    report = render(nights, sizes, tools, results, lims, versions, a.runs, a.restores)
    print(report)
    if a.out:
        open(a.out, "w").write(report)


METRICS = [  # key, header, higher is better
    ("night1", "night 1 MiB/s", True),
    ("incr", "nights 2-N MiB/s", True),
    ("check_s", "full check s", False),
    ("restore", "restore last night MiB/s", True),
    ("store", "store after N nights MiB", False),
]


def render(nights, sizes, tools, results, lims, versions, runs, restores=1):
    mib = 1 << 20
    lines = []
    metrics = METRICS + ([("restore_med", f"restore last night, median of {restores} MiB/s", True)] if restores > 1 else [])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines.append(f"Date {datetime.date.today()}, {platform.node()}: {os.cpu_count()} cores ({cpu}), "
                 f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, kernel {platform.release()}.")
    lines.append(f"{len(nights)} nights, {sum(sizes) / mib:.0f} MiB logical (night 1 {sizes[0] / mib:.0f} MiB, last {sizes[-1] / mib:.0f} MiB); "
                 f"medians of {runs} runs (min-max).\n")
    lines.append("| tool | version | " + " | ".join(h for _, h, _ in metrics) + " | peak RSS MiB backup / check / restore |")
    lines.append("|---|---|" + "---|" * len(metrics) + "---|")
    fmt = lambda k, xs: (f"{med(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})" if len(xs) > 1 else f"{med(xs):.1f}")
    for t in tools:
        rs = results[t]
        cells = []
        for k, _, _ in metrics:
            c = fmt(k, [r[k] for r in rs])
            if k == "check_s" and t == "bupstash":
                c += " (get of one night only)"
            cells.append(c)
        rss = " / ".join(f"{max(r[k] for r in rs):.0f}" for k in ("rss_backup", "rss_check", "rss_restore"))
        lines.append(f"| {t} | {versions[t]} | " + " | ".join(cells) + f" | {rss} |")
    peers = [t for t in tools if not t.startswith("rpger-store")]
    if "rpger-store" in tools and peers:
        lines.append("\nSame-run ratio of rpger-store to the best peer in that run (> 1: rpger-store is better), median (min-max):\n")
        lines.append("| metric | best peer (most runs) | ratio |")
        lines.append("|---|---|---|")
        for k, h, higher in metrics:
            ratios, best_names = [], []
            for i in range(runs):
                cands = [(results[p][i][k], p) for p in peers if not (k == "check_s" and p == "bupstash")]
                if not cands:
                    continue
                best, who = (max(cands) if higher else min(cands))
                mine = results["rpger-store"][i][k]
                ratios.append(mine / best if higher else best / mine)
                best_names.append(who)
            if ratios:
                who = max(set(best_names), key=best_names.count)
                lines.append(f"| {h} | {who} | {fmt(k, ratios)} |")
        rss = [max(r["rss_backup"], r["rss_check"], r["rss_restore"]) for r in results["rpger-store"]]
        lines.append(f"\nrpger-store peak RSS over backup, check and restore: {max(rss):.0f} MiB.")
    lines.append("\nStore growth per night (MiB, median over runs):\n")
    lines.append("| tool | " + " | ".join(f"n{i}" for i in range(1, len(nights) + 1)) + " |")
    lines.append("|---|" + "---|" * len(nights))
    for t in tools:
        g = [med([r["growth"][i] for r in results[t]]) for i in range(len(nights))]
        lines.append(f"| {t} | " + " | ".join(f"{x:.0f}" for x in g) + " |")
    lines.append(f"| (logical) | " + " | ".join(f"{s / mib:.0f}" for s in sizes) + " |")
    lines.append("\nLimits on night 1's files in the same runs (MiB/s, median (min-max)):\n")
    lines.append("| limit | MiB/s |")
    lines.append("|---|---|")
    for k in lims[0]:
        xs = [sizes[0] / mib / l[k] for l in lims]
        lines.append(f"| {k} | {fmt(k, xs)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
