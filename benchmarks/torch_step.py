#!/usr/bin/env python3
"""Times training steps of the project's PyTorch reference of the model (tests/python/
climax_reference.py) on the weights of a dchag checkpoint: the counterpart of
`model_benchmark --config ... --write-checkpoint FILE`, run by scripts/compare_pytorch.sh.

A step is what dchag's ForecastTrainer times: zero the gradients, forward, latitude-weighted
MSE, backward, clip to global norm 1, torch.optim.AdamW (ClimaX's betas and weight decay), in
float32 on the CPU, with the batch shape of the C++ run (random data: the cost does not depend
on the values). Prints one line

    result: ... median_ms=... best_ms=... samples_per_s=...

    torch_step.py --checkpoint FILE --batch B [--steps N] [--warmup N] [--threads T]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from climax_reference import lat_weighted_mse, load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="dchag checkpoint of the initial weights")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after the warm-up")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1:
        ap.error("--steps and --batch must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, cfg, aggregator = load_model(args.checkpoint, dtype=torch.float32)
    model.train()
    B, H, W = args.batch, cfg["height"], cfg["width"]
    x = torch.randn(B, cfg["channels"], H, W)
    y = torch.randn(B, cfg["out_channels"], H, W)
    lead = torch.full((B,), 0.24)
    lat_weights = torch.ones(H)
    params = list(model.parameters())
    # dchag decays only the weight matrices; the decay's cost is the same for every tensor, so
    # one group times the same work.
    opt = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-5)

    def step():
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = lat_weighted_mse(model(x, lead), y, lat_weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return time.perf_counter() - t0, loss.item()

    for _ in range(max(args.warmup, 1)):
        step()
    seconds = []
    for _ in range(args.steps):
        s, loss = step()
        if not loss == loss:  # NaN: a broken model times nothing meaningful
            sys.exit("torch_step.py: the loss became NaN")
        seconds.append(s)
    median = statistics.median(seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, aggregator {aggregator}, "
          f"{sum(p.numel() for p in params)} parameters in {len(params)} tensors")
    print(f"result: batch={B} steps={args.steps} median_ms={median * 1e3:.4f} "
          f"best_ms={min(seconds) * 1e3:.4f} samples_per_s={B / median:.3f}")


if __name__ == "__main__":
    main()
