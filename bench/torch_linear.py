#!/usr/bin/env python3
"""torch's own products on the encoder shapes, to read beside `tpipe-limits`: GFLOP/s of
torch.nn.functional.linear (x [m×k] · Wᵀ + b) in bf16 and fp32, with the thread count
set as the side-by-side scripts set it, rotating over eight weights so that each call
meets a weight that is not the last one's. Median and best of 24 calls (128 rows) or 8
(2048 rows), after 3 untimed ones. Run it under the same pinning as tpipe:

    taskset -c 0,1 python3 bench/torch_linear.py [--threads 2]

`ONEDNN_VERBOSE=1` in the environment shows which oneDNN kernel torch picks.
"""
import argparse
import time

import torch

SHAPES = [(128, 768, 768), (128, 3072, 768), (128, 768, 3072),
          (2048, 768, 768), (2048, 3072, 768), (2048, 768, 3072)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(ap.parse_args().threads)
    for dtype in (torch.bfloat16, torch.float32):
        for m, n, k in SHAPES:
            x = torch.randn(m, k).to(dtype)
            ws = [(torch.randn(n, k) * 0.02).to(dtype) for _ in range(8)]
            b = torch.zeros(n, dtype=dtype)
            for _ in range(3):
                torch.nn.functional.linear(x, ws[0], b)
            times = []
            for i in range(24 if m <= 128 else 8):
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, ws[i % 8], b)
                times.append(time.perf_counter() - t0)
            times.sort()
            flop = 2.0 * m * n * k
            print(f"torch {str(dtype)[6:]:9s} {m:5d}x{n:5d}x{k:5d} {flop / times[len(times) // 2] / 1e9:8.1f} "
                  f"GFLOP/s median, {flop / times[0] / 1e9:8.1f} best", flush=True)


if __name__ == "__main__":
    main()
