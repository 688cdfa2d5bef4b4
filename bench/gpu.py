"""FAISS search on an NVIDIA GPU beside a torch brute-force reference, one short run.

For each size (default 1M and 10M random unit 384-d vectors) and batch (1, 16, 256 queries):
FAISS's exact GPU index (``GpuIndexFlatIP``, fp32 and fp16 storage) and ``torch`` matmul +
topk over the same vectors in fp16, the memory-bandwidth reference (measured on an H100 by
the issue's author: 0.39 ms for one query over 1M fp16 vectors, 2.8 ms over 10M). Times are
medians over ``--repeats`` after warm-up, with the device synchronised. When the installed
faiss has no GPU support (``faiss-gpu-cu12`` is the wheel), the FAISS rows say so and the
torch rows are still measured. Prints JSON on stdout.

    python -m bench.gpu --out gpu.json
    python -m bench.gpu --sizes 1000000 --repeats 50     # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DIM = 384
K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def timed(call: Any, sync: Any, repeats: int) -> dict[str, float]:
    for _ in range(5):
        call()
    sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    report: dict[str, Any] = {"benchmark": "gpu", "dim": DIM, "k": K, "repeats": args.repeats,
                              "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if not torch.cuda.is_available():
        report["note"] = "no CUDA device visible: nothing to measure"
        print(json.dumps(report, indent=2))
        return 1
    device = torch.device("cuda")
    report["device"] = torch.cuda.get_device_name(0)
    has_faiss = False
    try:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        report["faiss"] = {"version": faiss.__version__, "gpus": gpus}
        has_faiss = True
    except ImportError:
        gpus = 0
        report["faiss"] = {"error": "faiss is not installed"}
    if has_faiss and gpus == 0:
        report["faiss"]["note"] = ("this faiss has no GPU support (install faiss-gpu-cu12); "
                                   "only the torch reference is measured")
    rows = []
    for size in args.sizes:
        generator = torch.Generator(device=device).manual_seed(size)
        base = torch.randn(size, DIM, device=device, generator=generator, dtype=torch.float16)
        base = torch.nn.functional.normalize(base, dim=1)
        indexes: dict[str, Any] = {}
        if has_faiss and gpus > 0:
            resources = faiss.StandardGpuResources()
            host = base.float().cpu().numpy()
            for name, fp16 in (("faiss_flat_fp32", False), ("faiss_flat_fp16", True)):
                config = faiss.GpuIndexFlatConfig()
                config.useFloat16 = fp16
                index = faiss.GpuIndexFlatIP(resources, DIM, config)
                began = time.perf_counter()
                index.add(host)
                indexes[name] = (index, round(time.perf_counter() - began, 2))
            del host
        for batch in args.batches:
            queries = torch.nn.functional.normalize(
                torch.randn(batch, DIM, device=device, generator=generator,
                            dtype=torch.float16), dim=1)
            row: dict[str, Any] = {"n": size, "batch": batch}
            row["torch_fp16_matmul_topk"] = timed(
                lambda q=queries, b=base: torch.topk(q @ b.T, K, dim=1), torch.cuda.synchronize,
                args.repeats)
            host_queries = queries.float().cpu().numpy().astype(np.float32)
            for name, (index, add_s) in indexes.items():
                row[name] = {**timed(lambda i=index, q=host_queries: i.search(q, K),
                                     torch.cuda.synchronize, args.repeats), "add_s": add_s}
            rows.append(row)
            print(json.dumps(row), flush=True, file=sys.stderr)
        del base, indexes
        torch.cuda.empty_cache()
    report["results"] = rows
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
