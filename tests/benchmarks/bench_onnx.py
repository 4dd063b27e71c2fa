"""Student inference: ONNX Runtime vs PyTorch on the same real tiles, in one process.

The bundle's ONNX graph is exported exactly as ``export_bundle`` does it, then both runtimes
classify the bundled demo RGB images (preprocessed by the training pipeline's own code) with the
same thread count. Prints tiles/s for each and the ratio, plus the max |logit difference|.

    .venv/bin/python tests/benchmarks/bench_onnx.py [--archs shufflenet_v2_x1_0 resnet34] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime
import torch

from resources import demo_project
from sembridge_engine.data.discovery import discover_rgb_folder
from sembridge_engine.data.readers import read_image
from sembridge_engine.data.transforms import compute_channel_stats, preprocess_arrays
from sembridge_engine.bundle import export_onnx
from sembridge_engine.models.backbones import build_backbone


def demo_tiles(tile_size: int) -> torch.Tensor:
    records = discover_rgb_folder(demo_project() / "rgb").records
    tiles = preprocess_arrays([read_image(r.path, as_rgb=True) for r in records], tile_size, None)
    return compute_channel_stats(tiles).normalise(tiles)


def best_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["shufflenet_v2_x1_0", "resnet34"])
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiles = demo_tiles(args.tile)
    batches = tiles.split(args.batch)
    print(f"{len(tiles)} demo RGB tiles at {args.tile} px, batch {args.batch}, {args.threads} threads, best of {args.repeats}")
    print(f"{'architecture':<22}{'PyTorch tiles/s':>16}{'ONNX RT tiles/s':>17}{'ONNX / PyTorch':>16}{'max |dlogit|':>14}")
    for arch in args.archs:
        model = build_backbone(arch, 3, 6).eval()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(export_onnx(model, 3, args.tile), options,
                                               providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def run_torch(model=model):
            with torch.inference_mode():
                return torch.cat([model(batch) for batch in batches]).numpy()

        def run_onnx(session=session, input_name=input_name):
            return np.concatenate([session.run(None, {input_name: batch.numpy()})[0] for batch in batches])

        difference = float(np.abs(run_torch() - run_onnx()).max())
        torch_rate = len(tiles) / best_seconds(run_torch, args.repeats)
        onnx_rate = len(tiles) / best_seconds(run_onnx, args.repeats)
        print(f"{arch:<22}{torch_rate:>16.0f}{onnx_rate:>17.0f}{onnx_rate / torch_rate:>15.2f}x{difference:>14.2e}")


if __name__ == "__main__":
    main()
