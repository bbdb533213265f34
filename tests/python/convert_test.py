"""A ClimaX Lightning checkpoint converts into a dchag checkpoint that forecasts as PyTorch does
(a ctest test, see tests/CMakeLists.txt).

    convert_test.py --workdir DIR -- <driver command...>

The PyTorch reference (ClimaX's module tree and names) is written as ClimaX writes its
checkpoints: float32 weights under `net.` in `state_dict`, the network's arguments under
`hyper_parameters` as LightningCLI saves them. scripts/convert_climax_checkpoint.py converts it;
the reference must load the result strictly, and the C++ driver (tests/python/interop_driver.cpp
`run`) must forecast what the reference forecasts from the float32 weights, in double.
"""

import argparse
import os
import subprocess
import sys

import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import climax_reference as ref  # noqa: E402
from interop_test import TOLERANCE, check, run  # noqa: E402

CONVERTER = os.path.join(HERE, "..", "..", "scripts", "convert_climax_checkpoint.py")
VARIABLES = ["geopotential_500", "temperature_850", "2m_temperature", "10m_u_component_of_wind",
             "10m_v_component_of_wind", "specific_humidity_700"]
OUTPUTS = ["2m_temperature", "geopotential_500", "temperature_850"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("driver", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    driver = [a for a in args.driver if a != "--"]
    os.makedirs(args.workdir, exist_ok=True)
    w = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    torch.set_grad_enabled(False)
    failures = []

    cfg = {"channels": len(VARIABLES), "out_channels": len(OUTPUTS), "height": 8, "width": 16,
           "patch": 4, "dim": 16, "depth": 2, "heads": 4, "mlp_ratio": 2.5, "decoder_depth": 2,
           "levels": [1], "lead_time": True, "variables": VARIABLES, "out_variables": OUTPUTS}
    model = ref.random_model(cfg, "none", seed=77).float()  # ClimaX trains in float32
    ckpt = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.9.0",
        "state_dict": {"net." + k: v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "net": {"class_path": "climax.arch.ClimaX",
                    "init_args": {"default_vars": VARIABLES, "img_size": [8, 16], "patch_size": 4,
                                  "embed_dim": 16, "depth": 2, "decoder_depth": 2,
                                  "num_heads": 4, "mlp_ratio": 2.5, "drop_path": 0.1,
                                  "drop_rate": 0.1}},
            "out_variables": OUTPUTS, "lr": 5e-4},
    }
    torch.save(ckpt, w("climax.ckpt"))
    # Lightning checkpoints pickle more than tensors; this one is our own.
    run([sys.executable, CONVERTER, w("climax.ckpt"), w("converted.safetensors"),
         "--unsafe-pickle"])

    # The reference reads the converted file strictly (every name and shape).
    loaded, loaded_cfg, aggregator = ref.load_model(w("converted.safetensors"))
    if aggregator != "none" or loaded_cfg["variables"] != VARIABLES or \
            loaded_cfg["out_variables"] != OUTPUTS:
        failures.append("converted configuration")
        print(f"  converted: {aggregator} {loaded_cfg}")

    gen = torch.Generator().manual_seed(5)
    B = 2
    x = torch.rand(B, cfg["channels"], 8, 16, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.rand(B, len(OUTPUTS), 8, 16, generator=gen, dtype=torch.float64) * 2 - 1
    lead = torch.rand(B, generator=gen, dtype=torch.float64)
    lat = 0.5 + torch.rand(8, generator=gen, dtype=torch.float64)
    ref.save_safetensors(w("batch.safetensors"),
                         {"x": x, "y": y, "lead_times": lead, "lat_weights": lat})
    pred = model.double()(x, lead)
    check("reference from the converted file", loaded(x, lead), pred, failures)
    run(driver + ["run", "--checkpoint", w("converted.safetensors"), "--batch",
                  w("batch.safetensors"), "--out", w("cpp_from_climax.safetensors")])
    cpp, _ = ref.load_safetensors(w("cpp_from_climax.safetensors"))
    check("prediction", cpp["prediction"], pred, failures)
    check("loss", cpp["loss"], ref.lat_weighted_mse(pred, y, lat).reshape(()), failures)

    # What the weights cannot tell must agree with them.
    bad = subprocess.run([sys.executable, CONVERTER, w("climax.ckpt"), w("bad.safetensors"),
                          "--unsafe-pickle", "--img-size", "16", "16"],
                         capture_output=True, text=True)
    if bad.returncode == 0 or "does not give the 8 patches" not in bad.stderr:
        failures.append("wrong image size accepted")
        print(f"  --img-size 16 16: rc {bad.returncode}, {bad.stderr.strip()}")

    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print(f"ClimaX checkpoint conversion: ok (tolerance {TOLERANCE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
