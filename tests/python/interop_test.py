"""Checkpoints move between dchag and PyTorch, both ways (a ctest test, see tests/CMakeLists.txt).

    interop_test.py --aggregator none|linear|cross_attention --workdir DIR -- <driver command...>

The driver command (e.g. `mpiexec -n 2 interop_driver`) is tests/python/interop_driver.cpp.
  1. C++ -> PyTorch: the driver trains a model a little, writes its checkpoint, a batch and its
     output; the PyTorch reference loads the checkpoint strictly (every name, every shape) and
     must produce the same prediction and loss.
  2. PyTorch -> C++: the reference initialises a model of the same configuration its own way,
     writes a checkpoint and its output; the driver loads it and must produce the same output,
     and the checkpoint it writes back must hold the very same values.
Both sides compute in double, so the tolerance is tight (1e-10 relative to max(1, |value|)).
"""

import argparse
import os
import subprocess
import sys

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import climax_reference as ref  # noqa: E402

TOLERANCE = 1e-10


def max_rel_diff(a, b):
    a, b = a.double(), b.double()
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return ((a - b).abs() / b.abs().clamp(min=1.0)).max().item()


def check(what, a, b, failures):
    d = max_rel_diff(a, b)
    ok = d <= TOLERANCE
    print(f"  {what}: max relative difference {d:.3e} {'ok' if ok else 'FAILED'}")
    if not ok:
        failures.append(what)


def run(cmd):
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aggregator", required=True, choices=["none", "linear", "cross_attention"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("driver", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    driver = [a for a in args.driver if a != "--"]
    os.makedirs(args.workdir, exist_ok=True)
    w = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    torch.set_grad_enabled(False)
    failures = []

    print("C++ -> PyTorch")
    run(driver + ["write", "--aggregator", args.aggregator, "--dir", args.workdir])
    model, cfg, aggregator = ref.load_model(w("cpp_checkpoint.safetensors"))
    assert aggregator == args.aggregator, (aggregator, args.aggregator)
    batch, _ = ref.load_safetensors(w("batch.safetensors"))
    x, y = batch["x"].double(), batch["y"].double()
    lead, lat = batch["lead_times"].double(), batch["lat_weights"].double()
    cpp, _ = ref.load_safetensors(w("cpp_output.safetensors"))
    pred = model(x, lead)
    check("prediction", pred, cpp["prediction"], failures)
    check("loss", ref.lat_weighted_mse(pred, y, lat).reshape(()), cpp["loss"], failures)

    print("PyTorch -> C++")
    theirs = ref.random_model(cfg, args.aggregator, seed=1234)
    ref.save_model(w("torch_checkpoint.safetensors"), theirs, args.aggregator, seed=1234, step=5)
    pred = theirs(x, lead)
    loss = ref.lat_weighted_mse(pred, y, lat)
    run(driver + ["run", "--checkpoint", w("torch_checkpoint.safetensors"),
                  "--batch", w("batch.safetensors"), "--out", w("cpp_from_torch.safetensors"),
                  "--resave", w("cpp_resaved.safetensors")])
    cpp, _ = ref.load_safetensors(w("cpp_from_torch.safetensors"))
    check("prediction", cpp["prediction"], pred, failures)
    check("loss", cpp["loss"], loss.reshape(()), failures)
    # What C++ loaded and wrote back is exactly what PyTorch wrote: names, shapes, every bit.
    written = theirs.state_dict()
    back, meta = ref.load_safetensors(w("cpp_resaved.safetensors"))
    if set(back) != set(written):
        failures.append("resaved names")
        print(f"  resaved names differ: {sorted(set(back) ^ set(written))}")
    else:
        same = all(torch.equal(back[k], written[k]) for k in written)
        print(f"  {len(back)} tensors written back by C++: {'bit-identical' if same else 'DIFFERENT'}")
        if not same:
            failures.append("resaved values")
    if meta.get("step") != "5":
        failures.append("resaved step")

    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print("PyTorch interoperability: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
