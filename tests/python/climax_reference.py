"""A PyTorch reference of dchag's forecast model, built from standard torch.nn modules, and a
minimal safetensors reader/writer in pure Python (Debian ships no python3-safetensors).

The module tree mirrors ClimaX (arXiv 2301.10343) so that the state_dict names are exactly the
names dchag writes into a checkpoint:

    token_embeds.{c}.proj          Conv2d(1, D, p, stride=p), one per input channel (timm PatchEmbed)
    var_embed [1, C, D]            channel embedding
    agg.{i}.{g}                    D-CHAG partial aggregator g of level i (none for the baseline):
                                     linear: nn.Linear(Cg, 1) across the group's tokens
                                     cross_attention: nn.MultiheadAttention + its own query
                                     parameter agg.{i}.{g}.query [1, 1, D]
    var_query [1, 1, D], var_agg   final cross-attention (nn.MultiheadAttention, batch_first)
    pos_embed [1, L, D], lead_time_embed = Linear(1, D)
    blocks.{i}                     timm Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2
    norm                           LayerNorm (eps 1e-5)
    head                           Sequential: [Linear(D, D), GELU] x decoder_depth,
                                   Linear(D, C p^2) (every input variable); then ClimaX's
                                   unpatchify and preds[:, out_var_ids] (the output variables)

Run in float64 against the C++ model in double, the two agree to rounding (~1e-15).
"""

import json
import struct

import numpy as np
import torch
from torch import nn

# ---- safetensors ---------------------------------------------------------------------------------

_READ = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}
_WRITE = {torch.float64: ("F64", "<f8"), torch.float32: ("F32", "<f4")}


def load_safetensors(path):
    """Returns ({name: tensor}, metadata) of a safetensors file, in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        raw = data[base + begin : base + end]
        dtype = info["dtype"]
        if dtype == "BF16":  # the upper half of a float32
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _READ:
            array = np.frombuffer(raw, dtype=_READ[dtype])
        else:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        tensors[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="))).reshape(
            info["shape"]
        )
    return tensors, metadata


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (float32 / float64) and string metadata as a safetensors file."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        dtype, layout = _WRITE[t.dtype]
        raw = t.numpy().astype(layout).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)  # data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


# ---- the model -----------------------------------------------------------------------------------

CONFIG_FIELDS = ("channels", "out_channels", "height", "width", "patch", "dim", "depth", "heads",
                 "mlp_ratio", "decoder_depth")
# ClimaX's mlp_ratio is a float (hidden = int(dim * mlp_ratio)); older dchag files hold "4".
FLOAT_FIELDS = ("mlp_ratio",)


def default_variables(channels):
    """dchag's names of variables nobody named."""
    return [f"var{c}" for c in range(channels)]


def config_from_metadata(meta):
    """The model configuration and aggregator a dchag checkpoint records."""
    if meta.get("format") != "dchag.checkpoint":
        raise ValueError("not a dchag checkpoint (metadata 'format' is not 'dchag.checkpoint')")
    cfg = {k: (float if k in FLOAT_FIELDS else int)(meta["config." + k]) for k in CONFIG_FIELDS}
    cfg["levels"] = [int(v) for v in meta["config.levels"].split(",")]
    cfg["lead_time"] = meta["config.lead_time"] == "true"
    # Files written before variables were named: the defaults, all of them predicted.
    names = meta.get("config.variables")
    cfg["variables"] = names.split(",") if names else default_variables(cfg["channels"])
    outs = meta.get("config.out_variables")
    cfg["out_variables"] = outs.split(",") if outs else list(cfg["variables"])
    if len(cfg["out_variables"]) != cfg["out_channels"]:
        raise ValueError(f"config.out_channels = {cfg['out_channels']} but "
                         f"{len(cfg['out_variables'])} output variables")
    return cfg, meta.get("aggregator", "none")


def metadata_for(cfg, aggregator, seed=0, step=0):
    """The metadata dchag's load_checkpoint requires (the names and values it writes itself)."""
    meta = {"format": "dchag.checkpoint", "format_version": "1", "aggregator": aggregator,
            "policy": "PyTorch reference", "scalar": "F64", "step": str(step),
            "config.seed": str(seed), "config.levels": ",".join(str(v) for v in cfg["levels"]),
            "config.lead_time": "true" if cfg["lead_time"] else "false"}
    for k in CONFIG_FIELDS:
        meta["config." + k] = str(cfg[k])
    meta["config.out_channels"] = str(len(cfg["out_variables"]))
    meta["config.variables"] = ",".join(cfg["variables"])
    meta["config.out_variables"] = ",".join(cfg["out_variables"])
    return meta


class PatchEmbed(nn.Module):
    """timm's PatchEmbed for one channel: Conv2d(1 -> D, kernel = stride = p), tokens row-major."""

    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x):  # [B, 1, H, W] -> [B, L, D]
        return self.proj(x).flatten(2).transpose(1, 2)


class QueryAttention(nn.MultiheadAttention):
    """A D-CHAG-C group: nn.MultiheadAttention with its own learnable query (named 'query')."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads, batch_first=True)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))

    def aggregate(self, tokens):  # [N, K, D] -> [N, D]
        q = self.query.expand(tokens.shape[0], -1, -1)
        return self(q, tokens, tokens, need_weights=False)[0].squeeze(1)


class Attention(nn.Module):
    """timm's Attention (qkv_bias=True): q|k|v stacked on the rows of qkv, heads contiguous."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm's pre-LayerNorm ViT block."""

    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClimaXReference(nn.Module):
    def __init__(self, cfg, aggregator):
        super().__init__()
        C, D, p, heads = cfg["channels"], cfg["dim"], cfg["patch"], cfg["heads"]
        self.cfg, self.aggregator = cfg, aggregator
        self.L = (cfg["height"] // p) * (cfg["width"] // p)
        self.token_embeds = nn.ModuleList([PatchEmbed(p, D) for _ in range(C)])
        self.var_embed = nn.Parameter(torch.zeros(1, C, D))
        # D-CHAG partial levels: every level but the last reduces contiguous groups of tokens.
        self.agg = nn.ModuleList()
        count = C
        for n in cfg["levels"][:-1]:
            size = count // n
            if aggregator == "linear":
                self.agg.append(nn.ModuleList([nn.Linear(size, 1) for _ in range(n)]))
            elif aggregator == "cross_attention":
                self.agg.append(nn.ModuleList([QueryAttention(D, heads) for _ in range(n)]))
            else:
                raise ValueError(f"levels {cfg['levels']} need a partial aggregator, got '{aggregator}'")
            count = n
        self.var_query = nn.Parameter(torch.zeros(1, 1, D))
        self.var_agg = nn.MultiheadAttention(D, heads, batch_first=True)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.L, D))
        if cfg["lead_time"]:
            self.lead_time_embed = nn.Linear(1, D)
        self.blocks = nn.ModuleList(
            [Block(D, heads, cfg["mlp_ratio"]) for _ in range(cfg["depth"])])
        self.norm = nn.LayerNorm(D, eps=1e-5)
        head = []
        for _ in range(cfg["decoder_depth"]):
            head += [nn.Linear(D, D), nn.GELU()]
        # ClimaX: the head predicts every input variable, the loss sees the output variables.
        head.append(nn.Linear(D, cfg["channels"] * p * p))
        self.head = nn.Sequential(*head)
        self.out_var_ids = [cfg["variables"].index(v) for v in cfg["out_variables"]]

    def aggregate(self, tokens):  # [N, C, D] -> [N, D]
        for level in self.agg:
            size = tokens.shape[1] // len(level)
            parts = []
            for g, m in enumerate(level):
                group = tokens[:, g * size:(g + 1) * size, :]
                if isinstance(m, QueryAttention):
                    parts.append(m.aggregate(group))
                else:  # Linear(Cg, 1) across the group's tokens
                    parts.append(m(group.transpose(1, 2)).squeeze(-1))
            tokens = torch.stack(parts, dim=1)
        q = self.var_query.repeat_interleave(tokens.shape[0], dim=0)
        return self.var_agg(q, tokens, tokens, need_weights=False)[0].squeeze(1)

    def unpatchify(self, x):  # ClimaX: [B, L, p*p*C] -> [B, C, H, W]
        p, c = self.cfg["patch"], self.cfg["channels"]
        h, w = self.cfg["height"] // p, self.cfg["width"] // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, lead_times):
        B = x.shape[0]
        tokens = torch.stack([e(x[:, c:c + 1]) for c, e in enumerate(self.token_embeds)], dim=1)
        tokens = tokens + self.var_embed.unsqueeze(2)  # [B, C, L, D]
        flat = tokens.permute(0, 2, 1, 3).flatten(0, 1)  # [B*L, C, D]
        x = self.aggregate(flat).unflatten(0, (B, self.L)) + self.pos_embed
        if self.cfg["lead_time"]:
            x = x + self.lead_time_embed(lead_times.unsqueeze(-1)).unsqueeze(1)
        for blk in self.blocks:
            x = blk(x)
        preds = self.unpatchify(self.head(self.norm(x)))
        return preds[:, self.out_var_ids]  # ClimaX: preds[:, out_var_ids]


def lat_weighted_mse(pred, y, lat_weights):
    """ClimaX's latitude-weighted MSE over all variables, weights given per grid row."""
    return ((pred - y) ** 2 * lat_weights[None, None, :, None]).mean()


def load_model(path, dtype=torch.float64):
    """The reference model of a dchag checkpoint, weights loaded (strictly: every name and shape)."""
    tensors, meta = load_safetensors(path)
    cfg, aggregator = config_from_metadata(meta)
    model = ClimaXReference(cfg, aggregator).to(dtype)
    state = {k: v.to(dtype) for k, v in tensors.items() if not k.startswith("optimizer.")}
    model.load_state_dict(state, strict=True)
    return model, cfg, aggregator


def random_model(cfg, aggregator, seed, dtype=torch.float64):
    """torch's own initialisation, then every parameter moved off it (no zero bias, no zero
    query), so that a mixed-up tensor cannot hide behind a constant."""
    torch.manual_seed(seed)
    model = ClimaXReference(cfg, aggregator).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def save_model(path, model, aggregator, seed=0, step=0):
    state = {k: v for k, v in model.state_dict().items()}
    save_safetensors(path, state, metadata_for(model.cfg, aggregator, seed, step))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="run a dchag checkpoint in PyTorch")
    ap.add_argument("checkpoint")
    ap.add_argument("batch")
    args = ap.parse_args()
    model, cfg, aggregator = load_model(args.checkpoint)
    batch, _ = load_safetensors(args.batch)
    with torch.no_grad():
        pred = model(batch["x"].double(), batch["lead_times"].double())
        loss = lat_weighted_mse(pred, batch["y"].double(), batch["lat_weights"].double())
    print(f"{aggregator}: prediction {tuple(pred.shape)}, loss {loss.item():.17g}")
