"""Does backing a meshbus sidecar's memory with 2 MB pages make a request after idle cheaper? Paired
runs, the same build, its memory collapsed into huge pages or left on 4 KB pages.

    .venv/bin/python bench/huge_pages.py [--rounds 2] [--variants 4k,collapse,arena] [--rate 50]
                                         [--requests 300] [--seconds 4] [--skip-chain] [--skip-paced]
    .venv/bin/python bench/huge_pages.py --idle-rss [--rounds 3]

Variants, the same build each:
- "4k": as shipped;
- "collapse": after the warm-up the kernel collapses the sidecar's memory into 2 MB pages from outside
  (process_madvise(MADV_COLLAPSE), what a worker could do to itself at start with madvise): every
  private anonymous read-write mapping ([heap], pymalloc's arenas, glibc's mmapped chunks) at least
  half resident, in its 2 MB-aligned parts (sparse ones, thread stacks, are left), and the executable
  file mappings' 2 MB-aligned parts at 2 MB-aligned file offsets (the only text a file huge page can
  back);
- "arena": the Python heap on huge pages from the interpreter's start (ARENA_C's pymalloc arena
  allocator, glibc.malloc.hugetlb=1 for malloc's), then "collapse" for what is left.
Measured with every variant's process(es) up, taken in turn, the order rotated round by round:
- the mTLS chain of bench/chain_wakes.py (one h2load connection at ``--rate``; each variant's chain on
  ports of its own): each sidecar's wake -> first write per direction;
- bench/paced_cpu.py's set-up (one meshbus proxy, run.py's realistic config, one variant at a time):
  CPU per request flat out and at 1,000 req/s (perf stat task-clock);
- ``--idle-rss``: bench/run.py's idle worker (100 services), its VmRSS 2 s after start.
Each prints what the collapse took (MB, ms) and the process's Rss / Anon / AnonHugePages / FilePmdMapped.

Why: at 1,000 req/s each request finds the caches emptied by a few ms of idle (bench/chain_wakes.py);
in this KVM guest no hardware counter tells TLB misses from cache misses, but a pointer chase over
2,000 random lines of a 64 MB region after 5 ms idle took 137 us on 4 KB pages and 67 us on 2 MB ones
(4-16 MB regions: 17.5 against 12.8 us, 28 against 30), and a worker's touched memory is spread over
~50 MB of heap and ~16 MB of text.

Measured here (December 2026, 2-core KVM guest, shared, load average 4-5; EPYC, THP "madvise", kernel
6.18): no-go, nothing landed in the proxy.
- text: nothing to collapse. The kernel is built without CONFIG_READ_ONLY_THP_FOR_FS (MADV_COLLAPSE
  and MADV_HUGEPAGE of an aligned read-only executable file mapping: EINVAL), and no executable mapping holds a 2 MB-aligned part at a 2 MB-aligned
  offset anyway: libpython's text is 2.34 MB, libcrypto's 2.62, the mypyc library's 2.46, uvloop's
  1.20, each starting past its object's first 2 MB boundary, so none contains a whole aligned 2 MB
  (even copying text into anonymous huge pages and remapping it in place, the way some JITs and HHVM
  do, needs that). Only a library we link could be laid out for it (-z max-page-size=0x200000 puts
  the mypyc text at a 2 MB boundary: ~2 of its 2.46 MB, out of ~16 MB of text mapped); not tried.
- heap, "collapse" (after warm-up): 21-27 MB of a sidecar's ~41 MB anonymous memory in 2 MB pages
  (the rest is in mappings under 2 MB or sparse), 34-715 ms of kernel work; "arena": 28-36 MB of
  41-45 MB from the start. mTLS chain, all three chains up at once, measured in turn, 6 rounds at 50
  req/s (300 requests each), request direction (wake -> first write) A / B, us: 4k 135-200 (mean 171)
  / 117-151 (136), arena 138-184 (157) / 110-140 (124), collapse 105-189 (157) / 90-147 (128); arena
  against 4k in the same round: -21, +36, -15, -1, -22, -10 % (A). A second run, 4k and arena only, 8
  rounds: A -4, +4, +23, -6, -14, +5, +3, -15 % (mean 0), B -6, -4, +8, -8, -11, -2, -2, -9 % (mean
  -4). Run one chain at a time, 7 more arena/4k pairs were -52, -49, +47, -22, +11, -11, +8 % (A): the
  machine's phase (a chain's cold pass moved between ~100 and ~190 us from one minute to the next, its
  response pass and its post-write work with it) decides more than the pages do. 0-8 % on average,
  never repeatably near the 15 % asked for.
- CPU a request (bench/paced_cpu.py's set-up, one proxy), 1,000 req/s, pairs 4k / arena: 70 / 112,
  106 / 102, 102 / 98, 106 / 104, 111 / 109, 113 / 121 us; collapse 121, 106, 114 beside the first
  three; flat out 34-40 us all alike. Nothing: the paced run's CPU does not come from TLB misses on
  the heap (bench/paced_cpu.py's PYTHONMALLOC=malloc + glibc hugetlb=1 found the same).
- cost: idle worker (run.py's 100 services) VmRSS 49.8-49.9 MB, collapse 50.1-50.2, arena 52.0-53.5
  (+2-3.6 MB: a 1 MB arena faults in a whole 2 MB page); chain sidecars 70-71 -> 73-74 MB with the
  arena. Start-up time alike (2.0-4.6 s, noise); collapsing at start would add its 34-715 ms.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the chain and its measurement from chain_wakes.py, the paced run from paced_cpu.py
import chain
import paced_cpu
import run
from chain import prepare
from chain_wakes import print_passes, record
from mtls import chains
from scratch import scratch_dir

HUGE = 2 << 20
MADV_COLLAPSE = 25
SYS_PIDFD_OPEN, SYS_PROCESS_MADVISE = 434, 440  # x86-64
libc = ctypes.CDLL(None, use_errno=True)

# The "arena" variant's pymalloc arena allocator (CPython's PyObject_SetArenaAllocator), installed by a
# sitecustomize at interpreter start: 1 MB arenas carved out of 2 MB-aligned MADV_HUGEPAGE reservations
# of 64 MB, freed ones kept for reuse (unmapping one would split its huge page).
ARENA_C = r"""
/* Experiment: pymalloc's arenas carved out of 2 MB-aligned MADV_HUGEPAGE reservations. */
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

typedef struct { void *ctx; void *(*alloc)(void *, size_t); void (*free)(void *, void *, size_t); } ArenaAllocator;
extern void PyObject_SetArenaAllocator(ArenaAllocator *);

#define HUGE (2UL << 20)
#define CHUNK (64UL << 20)
#define MAXR 64
static char *rbase[MAXR], *rend[MAXR];
static int nr;
static char *cur, *lim;
static void *freelist[4096];
static int nfree;

static int ours(void *p) {
    for (int i = 0; i < nr; i++) if ((char *)p >= rbase[i] && (char *)p < rend[i]) return 1;
    return 0;
}

static void *arena_alloc(void *ctx, size_t size) {
    (void)ctx;
    if (size == (1UL << 20) || size == (256UL << 10)) {
        if (nfree) return freelist[--nfree];
        if (cur == NULL || cur + size > lim) {
            if (nr == MAXR) goto plain;
            char *p = mmap(NULL, CHUNK + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) goto plain;
            char *a = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
            if (a > p) munmap(p, a - p);
            if (a + CHUNK < p + CHUNK + HUGE) munmap(a + CHUNK, (p + CHUNK + HUGE) - (a + CHUNK));
            madvise(a, CHUNK, MADV_HUGEPAGE);
            rbase[nr] = a; rend[nr] = a + CHUNK; nr++;
            cur = a; lim = a + CHUNK;
        }
        void *r = cur; cur += size; return r;
    }
plain:;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *p, size_t size) {
    (void)ctx;
    if (ours(p) && nfree < 4096) { freelist[nfree++] = p; return; }  /* kept: a huge page is not split */
    if (!ours(p)) munmap(p, size);
}

static ArenaAllocator allocator = {NULL, arena_alloc, arena_free};
void install(void) { PyObject_SetArenaAllocator(&allocator); }
"""
SITECUSTOMIZE = (
    "import ctypes, os\nctypes.CDLL(os.path.join(os.path.dirname(__file__), 'hugearena.so')).install()\n"
)


def arena_env(tmp: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process whose Python heap is on 2 MB pages from its start: pymalloc's arenas
    from ARENA_C, glibc malloc's heap madvised (glibc.malloc.hugetlb=1)."""
    d = tmp / "arena"
    d.mkdir(exist_ok=True)
    (d / "hugearena.c").write_text(ARENA_C)
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", str(d / "hugearena.so"), str(d / "hugearena.c")], check=True
    )
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(base or os.environ)
    return {**env, "PYTHONPATH": str(d), "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def mappings(pid: int) -> list[dict]:
    """``pid``'s mappings from /proc/PID/smaps: start, end, perms, offset, path, rss (bytes)."""
    out: list[dict] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        f = line.split()
        if f and "-" in f[0] and not f[0].endswith(":"):
            start, end = (int(x, 16) for x in f[0].split("-"))
            out.append({"start": start, "end": end, "perms": f[1], "offset": int(f[2], 16),
                        "path": f[5] if len(f) > 5 else "", "rss": 0})  # fmt: skip
        elif f and f[0] == "Rss:":
            out[-1]["rss"] = int(f[1]) << 10
    return out


def aligned(m: dict) -> tuple[int, int] | None:
    start, end = (m["start"] + HUGE - 1) & ~(HUGE - 1), m["end"] & ~(HUGE - 1)
    return (start, end) if end > start else None


def heap_ranges(maps: list[dict], dense: float = 0.5) -> list[tuple[int, int]]:
    return [
        r
        for m in maps
        if m["perms"] == "rw-p"
        and m["path"] in ("", "[heap]")
        and m["rss"] >= dense * (m["end"] - m["start"])
        if (r := aligned(m))
    ]


def text_ranges(maps: list[dict]) -> list[tuple[int, int]]:
    return [
        r
        for m in maps
        if "x" in m["perms"] and m["path"].startswith("/") and (m["start"] - m["offset"]) % HUGE == 0
        if (r := aligned(m))
    ]


def collapse(pid: int, ranges: list[tuple[int, int]]) -> tuple[float, float, str]:
    """MB advised, ms taken, error (empty if none)."""
    if not ranges:
        return 0.0, 0.0, ""
    fd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        return 0.0, 0.0, os.strerror(ctypes.get_errno())
    try:
        vec = (IoVec * len(ranges))(*(IoVec(a, b - a) for a, b in ranges))
        t = time.perf_counter()
        n = libc.syscall(SYS_PROCESS_MADVISE, fd, vec, len(ranges), MADV_COLLAPSE, 0)
        ms = (time.perf_counter() - t) * 1e3
        err = os.strerror(ctypes.get_errno()) if n < 0 else ""
        return max(n, 0) / 1e6, ms, err
    finally:
        os.close(fd)


def rollup(pid: int) -> str:
    want = {"Rss:": "Rss", "Anonymous:": "Anon", "AnonHugePages:": "AnonHuge", "FilePmdMapped:": "FilePmd"}
    kb = {
        want[f[0]]: int(f[1])
        for f in (line.split() for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines())
        if f and f[0] in want
    }
    return " ".join(f"{k} {v / 1024:.1f} MB" for k, v in kb.items())


def make_huge(pid: int) -> str:
    maps = mappings(pid)
    heap, text = heap_ranges(maps), text_ranges(maps)
    hmb, hms, herr = collapse(pid, heap)
    tmb, tms, terr = collapse(pid, text)
    return (f"heap {hmb:.1f} MB in {hms:.0f} ms{' ' + herr if herr else ''}, "
            f"text {tmb:.1f} MB of {sum(b - a for a, b in text) / 1e6:.1f} collapsible in {tms:.0f} ms"
            f"{' ' + terr if terr else ''}")  # fmt: skip


VARIANTS = ("4k", "collapse", "arena")


def variants(rnd: int, names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` rotated round by round, so that no variant always runs first."""
    k = rnd % len(names)
    return names[k:] + names[:k]


def chain_rounds(args: argparse.Namespace) -> None:
    """Every variant's chain up at once (ports of its own), measured in turn round by round: all of them
    see the machine's same phases (here a run's cold wake moved 2x from one minute to the next)."""
    base = scratch_dir("meshbus-huge-pages-")
    prepare(base)
    with ExitStack() as stack:
        nginx = ["nginx", "-c", str(base / "nginx.conf")]
        origin = stack.enter_context(run.process(nginx, 0, run.ORIGIN, base / "nginx.log"))
        up: dict[str, tuple[list[int], int, str]] = {}
        for i, variant in enumerate(args.variants):
            tmp = base / variant
            tmp.mkdir()
            chain.A_PORT, chain.B_PORT, chain.B_STATS = (18101 + 1000 * i + k for k in range(3))
            prepare(tmp)
            setup = chains(tmp)["meshbus-mtls"]
            env = arena_env(tmp) if variant == "arena" else None
            pids = [
                stack.enter_context(run.process(cmd, 1, p, tmp / f"sidecar-{k}.log", env))
                for k, (cmd, p) in enumerate(setup)
            ]  # B, then A
            run.run_wrk(setup[-1][1], 1, None)  # warm-up: pools, caches
            done = "; ".join(make_huge(pid) for pid in pids) if variant != "4k" else ""
            up[variant] = (pids, setup[-1][1], done)
            print(f"{variant}: {done or 'left on 4 KB pages'}")
        for rnd in range(args.rounds):
            for variant in variants(rnd, args.variants):
                pids, port, _ = up[variant]
                script, logs = record(origin, pids, port, args.rate, args.requests, base)
                lat = sorted(ms for _, ms in run.h2load_rows(logs))
                print(
                    f"chain round {rnd + 1} {variant}: {len(lat)} requests, p50 {statistics.median(lat):.3f} ms"
                )
                print_passes(script, pids, len(lat))
        for variant, (pids, _, _) in up.items():
            print(f"{variant}: A {rollup(pids[1])}; B {rollup(pids[0])}")


def paced_rounds(args: argparse.Namespace) -> None:
    tmp = scratch_dir("meshbus-huge-paced-")
    setups, env = paced_cpu.prepare(tmp)
    cmd, port = setups["meshbus"]
    envs = {"4k": env, "collapse": env, "arena": arena_env(tmp, env)}
    with run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log") as origin:
        for rnd in range(args.rounds):
            for variant in variants(rnd, args.variants):
                t = time.perf_counter()
                with run.process(cmd, 1, port, tmp / f"{variant}.log", envs[variant]) as pid:
                    up = time.perf_counter() - t
                    run.run_wrk(port, 1, pid)  # warm-up: pools, caches
                    done = make_huge(pid) if variant != "4k" else ""
                    r1 = paced_cpu.measure(pid, paced_cpu.flat(port, args.seconds), tmp / "flat.perf", False)
                    with run.fifo_while([origin, pid]):
                        r2 = paced_cpu.measure(
                            pid, paced_cpu.paced(port, args.seconds, tmp), tmp / "paced.perf", False
                        )
                    mem = rollup(pid)
                print(f"paced round {rnd + 1} {variant}: CPU us a request flat {r1.get('cpu us', 0):.1f}, "
                      f"1,000 req/s {r2.get('cpu us', 0):.1f}; up in {up:.2f} s; {mem}" + (f"; collapsed {done}" if done else ""))  # fmt: skip


def idle_rss(args: argparse.Namespace) -> None:
    """bench/run.py's idle-RSS figure (one worker, 100 services, 2 s after start) per variant, collapsed
    first where the variant says so."""
    tmp = scratch_dir("meshbus-huge-rss-")
    (tmp / "mesh100.yaml").write_text(run.meshbus_conf(100))
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    envs = {"arena": arena_env(tmp)}
    for rnd in range(args.rounds):
        for variant in variants(rnd, args.variants):
            cmd = [exe, "--config", str(tmp / "mesh100.yaml"), "--outbound", "127.0.0.1:18182", "--inbound",
                   "off", "--admin", "127.0.0.1:18190", "--workers", "1", "--log-level", "warning"]  # fmt: skip
            t = time.perf_counter()
            with run.process(cmd, 1, 18190, tmp / "rss.log", envs.get(variant)) as pid:
                up = time.perf_counter() - t
                time.sleep(2.0)
                done = make_huge(pid) if variant != "4k" else ""
                print(f"idle round {rnd + 1} {variant}: VmRSS {run.rss_mb(pid):.1f} MB, up in {up:.2f} s; "
                      f"{rollup(pid)}" + (f"; collapsed {done}" if done else ""))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50, help="req/s of the chain's one h2load connection")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=4, help="of each paced_cpu load")
    ap.add_argument(
        "--variants",
        type=lambda v: tuple(v.split(",")),
        default=VARIANTS,
        help="comma list of " + ",".join(VARIANTS),
    )
    ap.add_argument("--skip-chain", action="store_true")
    ap.add_argument("--skip-paced", action="store_true")
    ap.add_argument("--idle-rss", action="store_true", help="only the idle worker's RSS per variant")
    args = ap.parse_args()
    if args.idle_rss:
        idle_rss(args)
        return 0
    if not args.skip_chain:
        chain_rounds(args)
    if not args.skip_paced:
        paced_rounds(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
