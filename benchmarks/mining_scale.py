"""Neighbour mining at scale: exact (flat) vs IVF search on 1M clustered 128-d vectors, CPU.

The database is a Gaussian mixture (``--centres`` random unit centres, isotropic noise),
L2-normalised as the mining stage does. Searching all N queries exactly would take about an
hour on 2 cores, so a random sample of ``--queries`` rows is searched against the whole
database with both indexes; recall@k of IVF is measured against the exact answer on that
sample, and the time to mine all N rows is projected from the per-query cost. Times are the
process's CPU seconds with one faiss thread (``--wall --threads 0`` for wall-clock times on
all cores), so that other work on a shared machine does not distort them.

    .venv/bin/python benchmarks/mining_scale.py            # 1M x 128, 10k queries
    .venv/bin/python benchmarks/mining_scale.py --n 100000 --queries 2000   # quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from scanlearn.mining import auto_nlist, build_index, l2_normalize, search

RESULTS = Path(__file__).parent / "results" / "mining_scale.json"
WALL = False


def clustered_vectors(n: int, dim: int, centres: int, noise: float, seed: int) -> np.ndarray:
    """``n`` float32 rows: a random unit centre each plus Gaussian noise of total norm about ``noise``."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim), dtype=np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data *= noise / np.sqrt(dim)
    data += means[rng.integers(0, centres, n)]
    return l2_normalize(data)


def timed(fn):
    """(result, seconds) of ``fn()``: CPU seconds of this process, or wall seconds with ``WALL``.

    On a shared machine the wall clock measures the other tenants too; with one faiss thread
    the process's CPU time is the time the work takes on one core.
    """
    clock = time.perf_counter if WALL else time.process_time
    start = clock()
    result = fn()
    return result, clock() - start


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true neighbours present in ``found``."""
    return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, truth)]) / truth.shape[1])


def run(args: argparse.Namespace) -> dict:
    """Build both indexes, search the query sample, and collect the figures."""
    data, gen_s = timed(lambda: clustered_vectors(args.n, args.dim, args.centres, args.noise, args.seed))
    rows = np.sort(np.random.default_rng(args.seed + 1).choice(args.n, args.queries, replace=False))
    queries = data[rows]
    flat, flat_build = timed(lambda: build_index(data, "flat"))
    (_, exact), flat_search = timed(lambda: search(flat, queries, args.k))
    nlist = args.nlist or auto_nlist(args.n)
    result = {
        "n": args.n, "dim": args.dim, "centres": args.centres, "noise": args.noise, "k": args.k,
        "queries": args.queries, "generate_s": gen_s,
        "flat": {"build_s": flat_build, "search_s": flat_search,
                 "mine_all_s": flat_build + flat_search * args.n / args.queries},
        "ivf": [],
    }
    ivf = None
    for nprobe in args.nprobe:
        if ivf is None:
            ivf, ivf_build = timed(lambda: build_index(data, "ivf", nlist=nlist, nprobe=nprobe, seed=args.seed))
        ivf.nprobe = nprobe
        (_, found), ivf_search = timed(lambda: search(ivf, queries, args.k))
        mine_all = ivf_build + ivf_search * args.n / args.queries
        result["ivf"].append({
            "nlist": nlist, "nprobe": nprobe, "build_s": ivf_build, "search_s": ivf_search,
            "recall": recall(found, exact), "search_speedup": flat_search / ivf_search,
            "mine_all_s": mine_all, "mine_all_speedup": result["flat"]["mine_all_s"] / mine_all,
        })
    return result


def table(result: dict) -> str:
    """The figures as a Markdown table."""
    flat = result["flat"]
    lines = [
        f"| index | build s | search {result['queries']} q s | recall@{result['k']} | search speed-up | "
        f"mine all {result['n']:,} s (projected) | speed-up |",
        "|---|---|---|---|---|---|---|",
        f"| flat (exact) | {flat['build_s']:.1f} | {flat['search_s']:.1f} | 1.000 | 1.0x | {flat['mine_all_s']:.0f} | 1.0x |",
    ]
    for row in result["ivf"]:
        lines.append(
            f"| IVF{row['nlist']} nprobe {row['nprobe']} | {row['build_s']:.1f} | {row['search_s']:.2f} | "
            f"{row['recall']:.3f} | {row['search_speedup']:.0f}x | {row['mine_all_s']:.0f} | {row['mine_all_speedup']:.0f}x |"
        )
    return "\n".join(lines)


def machine() -> dict:
    """Where the figures come from."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0, help="norm of the noise around a unit centre")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells (0: about 4 sqrt(N))")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--threads", type=int, default=1, help="faiss threads (0: all cores)")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    global WALL
    WALL = args.wall
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    load_before = os.getloadavg()
    result = run(args)
    result["machine"] = {**machine(), "load_before": load_before, "load_after": os.getloadavg(),
                         "clock": "wall" if args.wall else "process CPU time", "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"load average before/after: {load_before[0]:.1f} / {result['machine']['load_after'][0]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
