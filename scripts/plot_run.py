#!/usr/bin/env python3
"""Pictures of a training run of the main job (examples/train_dchag.cpp).

    scripts/plot_run.py RUN_DIR [--out DIR] [--variables N]

Reads what the main job writes into its run dir and draws, into RUN_DIR/plots (or --out):
  training.png  loss, learning rate and gradient norm per step (train_metrics.csv)
  skill.png     held-out latitude-weighted RMSE and ACC per variable of the model, persistence
                and climatology (eval.csv)
  maps.png      for the first N output variables (default 4): the input x(t), the truth
                x(t + lead), the forecast and forecast - truth of one held-out sample
                (forecast_maps.safetensors)
A file that is absent is skipped with a message; a file that is present but unreadable is an
error. Needs numpy and matplotlib (Debian: python3-numpy python3-matplotlib, installed by
`scripts/install_deps.sh plot`).
"""

import argparse
import csv
import json
import os
import struct
import sys

import numpy as np

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402


class RunFileError(Exception):
    pass


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RunFileError(f"{path}: no rows after the header")
    return rows


def column(rows, name, path):
    if name not in rows[0]:
        raise RunFileError(f"{path}: no column '{name}' (columns: {', '.join(rows[0])})")
    try:
        return np.array([float(r[name]) for r in rows])
    except (TypeError, ValueError) as e:
        raise RunFileError(f"{path}: column '{name}' holds a value that is not a number ({e})")


# The safetensors layout: an 8-byte little-endian header length, a JSON header naming each
# tensor's dtype, shape and byte range, then the bytes. Read here so that plotting needs no
# package beyond numpy.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise RunFileError(f"{path}: {len(data)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise RunFileError(f"{path}: header of {n} bytes runs past the end of the "
                           f"{len(data)}-byte file (truncated?)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise RunFileError(f"{path}: header is not JSON ({e})")
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, t in header.items():
        dtype = DTYPES.get(t.get("dtype"))
        if dtype is None:
            raise RunFileError(f"{path}: tensor '{name}' has dtype {t.get('dtype')}, expected one "
                               f"of {', '.join(DTYPES)}")
        begin, end = t["data_offsets"]
        shape = t["shape"]
        count = int(np.prod(shape)) if shape else 1
        if end > len(body) or end - begin != count * np.dtype(dtype).itemsize:
            raise RunFileError(f"{path}: tensor '{name}' of shape {shape} does not fit bytes "
                               f"[{begin}, {end}) of a {len(body)}-byte body")
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
    return tensors, meta


def plot_training(run_dir, out_dir):
    path = os.path.join(run_dir, "train_metrics.csv")
    if not os.path.exists(path):
        print(f"plot_run: no {path}: training curves skipped")
        return None
    rows = read_csv(path)
    step = column(rows, "step", path)
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True)
    axes[0].plot(step, column(rows, "loss", path), lw=1)
    axes[0].set_ylabel("loss (lat-weighted MSE)")
    axes[0].set_yscale("log")
    axes[1].plot(step, column(rows, "lr", path), lw=1, color="tab:orange")
    axes[1].set_ylabel("learning rate")
    axes[2].plot(step, column(rows, "grad_norm", path), lw=1, color="tab:green")
    axes[2].set_ylabel("gradient norm")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"training: {os.path.abspath(run_dir)}", fontsize=9)
    fig.tight_layout()
    out = os.path.join(out_dir, "training.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_skill(run_dir, out_dir):
    path = os.path.join(run_dir, "eval.csv")
    if not os.path.exists(path):
        print(f"plot_run: no {path}: skill plot skipped")
        return None
    rows = read_csv(path)
    names = [r["variable"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.45 * len(rows) + 2), 6.5), sharex=True)
    width = 0.27
    for k, (label, name) in enumerate([("model", "model_rmse"), ("persistence", "persistence_rmse"),
                                       ("climatology", "climatology_rmse")]):
        axes[0].bar(x + (k - 1) * width, column(rows, name, path), width, label=label)
    axes[0].set_ylabel("RMSE (normalised)")
    axes[0].legend(fontsize=8)
    for k, (label, name) in enumerate([("model", "model_acc"), ("persistence", "persistence_acc")]):
        axes[1].bar(x + (k - 0.5) * width, column(rows, name, path), width, label=label)
    axes[1].set_ylabel("ACC")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    lead = rows[0].get("lead_hours", "?")
    samples = rows[0].get("samples", "?")
    fig.suptitle(f"held-out skill, lead {lead} h, {samples} samples", fontsize=10)
    fig.tight_layout()
    out = os.path.join(out_dir, "skill.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_maps(run_dir, out_dir, count):
    path = os.path.join(run_dir, "forecast_maps.safetensors")
    if not os.path.exists(path):
        print(f"plot_run: no {path}: maps skipped")
        return None
    t, meta = read_safetensors(path)
    for name in ("input", "truth", "forecast"):
        if name not in t:
            raise RunFileError(f"{path}: no tensor '{name}' (has: {', '.join(t)})")
        if t[name].ndim != 3 or t[name].shape != t["truth"].shape:
            raise RunFileError(f"{path}: tensor '{name}' has shape {list(t[name].shape)}, expected "
                               f"[variables, height, width] = {list(t['truth'].shape)}")
    variables = meta.get("variables", "")
    names = variables.split(",") if variables else [str(i) for i in range(t["truth"].shape[0])]
    if len(names) != t["truth"].shape[0]:
        raise RunFileError(f"{path}: {len(names)} variable names for {t['truth'].shape[0]} maps")
    n = min(count, len(names))
    lat = t.get("latitudes")
    lon = t.get("longitudes")
    extent = None
    if lat is not None and lon is not None:
        extent = [float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())]
    units = meta.get("units", "")
    fig, axes = plt.subplots(n, 4, figsize=(14, 2.3 * n + 0.6), squeeze=False)
    for i in range(n):
        fields = [t["input"][i], t["truth"][i], t["forecast"][i]]
        lo = min(float(f.min()) for f in fields)
        hi = max(float(f.max()) for f in fields)
        error = t["forecast"][i] - t["truth"][i]
        e = float(np.abs(error).max()) or 1.0
        # Latitudes run north to south in the data (ERA5 / WeatherBench order) or south to north:
        # origin follows the first latitude so that north is up either way.
        origin = "upper" if lat is None or lat[0] > lat[-1] else "lower"
        for j, (title, field) in enumerate(zip(["input x(t)", "truth x(t+lead)", "forecast"],
                                               fields)):
            im = axes[i, j].imshow(field, vmin=lo, vmax=hi, cmap="viridis", extent=extent,
                                   origin=origin, aspect="auto")
            axes[i, j].set_title(f"{names[i]}: {title}", fontsize=8)
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046)
        im = axes[i, 3].imshow(error, vmin=-e, vmax=e, cmap="RdBu_r", extent=extent, origin=origin,
                               aspect="auto")
        axes[i, 3].set_title(f"{names[i]}: forecast - truth", fontsize=8)
        fig.colorbar(im, ax=axes[i, 3], fraction=0.046)
        for ax in axes[i]:
            ax.tick_params(labelsize=6)
    fig.suptitle(f"one held-out sample, lead {meta.get('lead_hours', '?')} h"
                 + (f" ({units})" if units else ""), fontsize=10)
    fig.tight_layout()
    out = os.path.join(out_dir, "maps.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--out", help="folder for the pictures (default RUN_DIR/plots)")
    p.add_argument("--variables", type=int, default=4, help="maps of this many variables")
    a = p.parse_args()
    if not os.path.isdir(a.run_dir):
        sys.exit(f"plot_run: {a.run_dir} is not a folder")
    if a.variables < 1:
        sys.exit(f"plot_run: --variables must be at least 1, got {a.variables}")
    out_dir = a.out or os.path.join(a.run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    try:
        written = [f for f in (plot_training(a.run_dir, out_dir), plot_skill(a.run_dir, out_dir),
                               plot_maps(a.run_dir, out_dir, a.variables)) if f]
    except (RunFileError, OSError, KeyError) as e:
        sys.exit(f"plot_run: {e}")
    if not written:
        sys.exit(f"plot_run: nothing to draw in {a.run_dir} (no train_metrics.csv, eval.csv or "
                 "forecast_maps.safetensors)")
    for f in written:
        print(f"plot_run: wrote {f}")


if __name__ == "__main__":
    main()
