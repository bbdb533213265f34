#!/usr/bin/env python3
"""Converts a ClimaX Lightning checkpoint into a dchag checkpoint.

    convert_climax_checkpoint.py CLIMAX.ckpt OUT.safetensors [--variables a,b,...]
        [--out-variables a,b,...] [--img-size H W] [--heads N] [--unsafe-pickle]

A ClimaX checkpoint holds the network's weights in `state_dict` under `net.` (token_embeds,
var_embed, var_query, var_agg, pos_embed, lead_time_embed, blocks, norm, head), which are the
names and shapes dchag gives the same parameters. The network's shape is read from the weights
(channels, patch, width, depth, MLP ratio, head depth, lead time) and, where the weights cannot
tell, from `hyper_parameters` (ClimaX's `default_vars`, `out_variables`, `img_size`, `num_heads`,
flat or under `net` / `net.init_args` as LightningCLI saves them) or the options, which take
precedence. ClimaX embeds the variables a batch names through `var_map`; the conversion assumes
the data gives all `default_vars`, in their order (as ClimaX's own data modules do). The result
is ClimaX's aggregation (levels {1}) in float32, the precision ClimaX
trains in; the main job continues from it with `--init-from OUT.safetensors` on any grid and
policy, with D-CHAG's partial aggregation levels (which ClimaX does not have) initialised.

Needs torch (Debian: python3-torch) and nothing else.
"""

import argparse
import json
import re
import struct
import sys

import torch


def save_safetensors(path, tensors, metadata):
    """{name: float tensor} and string metadata as a safetensors file (little-endian F32)."""
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        raw = t.detach().cpu().contiguous().to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def hyper_parameters(ckpt):
    """ClimaX's network arguments from the checkpoint, wherever Lightning put them."""
    found = {}
    hp = ckpt.get("hyper_parameters") or {}
    for scope in (hp, hp.get("net") if isinstance(hp.get("net"), dict) else {}):
        found.update({k: v for k, v in scope.items() if not isinstance(v, dict)})
        if isinstance(scope.get("init_args"), dict):
            found.update(scope["init_args"])
    return found


def count(state, pattern):
    ids = {int(m.group(1)) for k in state for m in [re.fullmatch(pattern, k)] if m}
    if ids != set(range(len(ids))):
        raise ValueError(f"{pattern}: indices {sorted(ids)} are not 0 ... n-1")
    return len(ids)


def names(text):
    return [v for v in text.split(",")] if isinstance(text, str) else list(text)


def convert(ckpt, args):
    if "state_dict" not in ckpt:
        raise ValueError("no 'state_dict': not a Lightning checkpoint")
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise ValueError("the state_dict holds no 'net.' entries: not a ClimaX checkpoint")
    hp = hyper_parameters(ckpt)

    C = count(state, r"token_embeds\.(\d+)\.proj\.weight")
    w = state["token_embeds.0.proj.weight"]
    D, p = w.shape[0], w.shape[-1]
    depth = count(state, r"blocks\.(\d+)\.norm1\.weight")
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    mlp_ratio = hidden / D
    if int(D * mlp_ratio) != hidden:
        raise ValueError(f"MLP hidden width {hidden} is not int({D} * mlp_ratio) for any ratio")
    head_ids = sorted(int(m.group(1)) for k in state
                      for m in [re.fullmatch(r"head\.(\d+)\.weight", k)] if m)
    linears = len(head_ids)
    if head_ids != list(range(0, 2 * linears, 2)):
        raise ValueError(f"head Linears at {head_ids}, expected head.0, head.2, ... (ClimaX)")
    last = state[f"head.{2 * (linears - 1)}.weight"]
    if last.shape[0] != C * p * p:
        raise ValueError(f"the head predicts {last.shape[0]} values per patch, expected every "
                         f"variable: {C} * {p}^2 = {C * p * p}")
    L = state["pos_embed"].shape[1]

    img = args.img_size or hp.get("img_size")
    if img is None:
        raise ValueError("the image size is not in the checkpoint: pass --img-size H W")
    H, W = int(img[0]), int(img[1])
    if H % p or W % p or (H // p) * (W // p) != L:
        raise ValueError(f"image {H}x{W} with patch {p} does not give the {L} patches of pos_embed")
    heads = args.heads or hp.get("num_heads")
    if heads is None:
        raise ValueError("the number of attention heads is not in the checkpoint: pass --heads N")
    variables = names(args.variables or hp.get("default_vars") or [f"var{c}" for c in range(C)])
    if len(variables) != C:
        raise ValueError(f"{len(variables)} variable names for the {C} token embeddings")
    outs = names(args.out_variables or hp.get("out_variables") or variables)
    missing = [v for v in outs if v not in variables]
    if missing:
        raise ValueError(f"output variables {missing} are not input variables {variables}")

    meta = {"format": "dchag.checkpoint", "format_version": "1", "model": "channel_vit",
            "aggregator": "none", "policy": "ClimaX (convert_climax_checkpoint.py)",
            "scalar": "F32", "step": "0", "config.seed": "0",
            "config.channels": str(C), "config.out_channels": str(len(outs)),
            "config.height": str(H), "config.width": str(W), "config.patch": str(p),
            "config.dim": str(D), "config.depth": str(depth), "config.heads": str(int(heads)),
            "config.mlp_ratio": repr(float(mlp_ratio)), "config.decoder_depth": str(linears - 1),
            "config.levels": "1",
            "config.lead_time": "true" if "lead_time_embed.weight" in state else "false",
            "config.variables": ",".join(variables), "config.out_variables": ",".join(outs),
            "config.drop_rate": repr(float(hp.get("drop_rate", 0.0))),
            "config.drop_path_rate": repr(float(hp.get("drop_path", 0.0)))}
    # var_embed is [1, C, D] in ClimaX as in dchag; every other name and shape is shared too.
    return {k: v for k, v in state.items() if torch.is_floating_point(v)}, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("climax")
    ap.add_argument("out")
    ap.add_argument("--variables", help="input variable names, comma-separated, in channel order")
    ap.add_argument("--out-variables", help="the forecast's variables, comma-separated")
    ap.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--heads", type=int)
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="unpickle arbitrary objects (Lightning's hyper_parameters may need it); "
                         "only for files you trust")
    args = ap.parse_args(argv)
    try:
        ckpt = torch.load(args.climax, map_location="cpu", weights_only=not args.unsafe_pickle)
    except Exception as e:  # noqa: BLE001 (torch raises several kinds)
        sys.exit(f"convert_climax_checkpoint: cannot read {args.climax}: {e}"
                 + ("" if args.unsafe_pickle else " (a file you trust: --unsafe-pickle)"))
    try:
        tensors, meta = convert(ckpt, args)
    except (ValueError, KeyError) as e:
        sys.exit(f"convert_climax_checkpoint: {args.climax}: {e}")
    save_safetensors(args.out, tensors, meta)
    print(f"{args.out}: {len(tensors)} tensors, C={meta['config.channels']} "
          f"out={meta['config.out_channels']} image={meta['config.height']}x{meta['config.width']} "
          f"patch={meta['config.patch']} D={meta['config.dim']} depth={meta['config.depth']} "
          f"heads={meta['config.heads']}")


if __name__ == "__main__":
    main()
