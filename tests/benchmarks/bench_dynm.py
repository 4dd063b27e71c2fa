"""DynM re-matching: one matrix op per class vs the per-tile kl_div reference loop.

Usage: .venv/bin/python tests/benchmarks/bench_dynm.py [--rgb 3000] [--ms 3000] [--classes 10]
       [--loop-tiles N] [--threads 1]
Synthetic logits (the cost does not depend on their values). With --loop-tiles N < --rgb the
loop is timed on the first N tiles and extrapolated per tile, and the output says so.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sembridge_engine.distill.matching import dynm_match, dynm_match_loop, ssm_match


def _timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rgb", type=int, default=3000)
    parser.add_argument("--ms", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--loop-tiles", type=int, default=0, help="time the loop on this many tiles (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gamma", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    student = 2 * torch.randn(args.rgb, args.classes, generator=generator)
    teacher = 3 * torch.randn(args.ms, args.classes, generator=generator)
    labels = torch.arange(args.rgb) % args.classes
    membership = F.one_hot(torch.arange(args.ms) % args.classes, args.classes).bool()

    dynm_match(student, labels, teacher, membership, args.gamma)  # warm-up
    fast_seconds, (fast_indices, fast_scores) = _timed(
        lambda: dynm_match(student, labels, teacher, membership, args.gamma), repeats=20)
    loop_tiles = args.loop_tiles if 0 < args.loop_tiles < args.rgb else args.rgb
    loop_seconds, (loop_indices, loop_scores) = _timed(
        lambda: dynm_match_loop(student[:loop_tiles], labels[:loop_tiles], teacher, membership, args.gamma), repeats=3)
    loop_full = loop_seconds * args.rgb / loop_tiles
    same = torch.equal(fast_indices[:loop_tiles], loop_indices)
    score_gap = (fast_scores[:loop_tiles] - loop_scores).abs().max().item()

    print(f"DynM, {args.rgb} RGB x {args.ms} MS tiles, {args.classes} classes, {args.threads} thread(s), gamma={args.gamma}")
    print(f"  vectorised (one matmul per class): {fast_seconds * 1e3:8.1f} ms  (median of 20)")
    if loop_tiles == args.rgb:
        print(f"  per-tile kl_div loop:              {loop_seconds * 1e3:8.1f} ms  (all {args.rgb} tiles, median of 3)")
    else:
        print(f"  per-tile kl_div loop:              {loop_full * 1e3:8.1f} ms  "
              f"(EXTRAPOLATED from {loop_tiles} tiles: {loop_seconds * 1e3:.1f} ms)")
    print(f"  speed-up: {loop_full / fast_seconds:.0f}x; identical argmin on the compared tiles: {same}; "
          f"max |KL difference|: {score_gap:.2e}")

    rgb_embeddings = torch.randn(args.rgb, 128, generator=generator)
    ms_embeddings = torch.randn(args.ms, 128, generator=generator)
    ssm_seconds, _ = _timed(lambda: ssm_match(rgb_embeddings, labels, ms_embeddings, membership), repeats=20)
    print(f"SSM cosine argmax, 128-d embeddings: {ssm_seconds * 1e3:.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
