"""The tinylm model in plain torch: a Llama-architecture causal language model.

Pre-norm decoder blocks: RMSNorm -> grouped-query attention with rotary position
embeddings (half-split "rotate_half" convention) -> residual; RMSNorm -> SwiGLU MLP
-> residual. A final RMSNorm, and the output head tied to the token embedding.
No biases. The q/k/v projections are one fused matrix, and so are the gate/up
projections of the MLP; weights are stored as [in, out] so that `x @ w` is what the
ONNX graph computes (export.py writes the same tensors into MatMul nodes).

The forward pass below is written with the same operations, in the same order, as
the ONNX graph of export.py (x / sqrt(mean(x^2) + eps), q scaled before q @ k^T,
masked scores set to MASK_VALUE, cos/sin looked up in precomputed tables), so the
two agree to float32 rounding.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -1.0e9


@dataclass(frozen=True)
class Config:
    vocab_size: int = 4096
    n_ctx: int = 256
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 2
    head_dim: int = 32
    d_ff: int = 768
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def to_dict(self):
        return asdict(self)


def rope_tables(cfg: Config):
    """cos and sin tables [n_ctx, head_dim] for positions 0..n_ctx-1 (float32).

    Computed in float64 and rounded once, so the tables are the same bytes on any
    machine; the ONNX graph gathers rows of these very tables by position id.
    """
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) * 2.0 / cfg.head_dim))
    pos = torch.arange(cfg.n_ctx, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(torch.float32), emb.sin().to(torch.float32)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.w_qkv = nn.Parameter(torch.empty(cfg.d_model, qkv_out))
        self.w_o = nn.Parameter(torch.empty(cfg.n_heads * cfg.head_dim, cfg.d_model))
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.w_gate_up = nn.Parameter(torch.empty(cfg.d_model, 2 * cfg.d_ff))
        self.w_down = nn.Parameter(torch.empty(cfg.d_ff, cfg.d_model))

    def attention(self, x, cos, sin, past, future):
        """x [B,S,d]; cos/sin [S,hd]; past (k, v) [B,kv,P,hd] or None;
        future [S,T] bool, True where key j is after query i (masked), or None for
        training: torch's fused causal attention, the same function computed faster
        (train.py measures the held-out loss with the explicit path)."""
        cfg = self.cfg
        B, S, _ = x.shape
        nh, nkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        g = nh // nkv
        qkv = x @ self.w_qkv
        q = qkv[..., : nh * hd].reshape(B, S, nh, hd).transpose(1, 2)
        k = qkv[..., nh * hd : (nh + nkv) * hd].reshape(B, S, nkv, hd).transpose(1, 2)
        v = qkv[..., (nh + nkv) * hd :].reshape(B, S, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        if future is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return out.transpose(1, 2).reshape(B, S, nh * hd) @ self.w_o, present
        # Query heads h = kv*g + i share kv head `kv`: view q as [B, nkv, g*S, hd].
        q = (q * (1.0 / math.sqrt(hd))).reshape(B, nkv, g * S, hd)
        scores = q @ k.transpose(2, 3)  # [B, nkv, g*S, T]
        scores = scores.masked_fill(future.repeat(g, 1), MASK_VALUE)
        probs = torch.softmax(scores, dim=-1)
        out = (probs @ v).reshape(B, nh, S, hd).transpose(1, 2).reshape(B, S, nh * hd)
        return out @ self.w_o, present

    def forward(self, x, cos, sin, past, future):
        a, present = self.attention(self.attn_norm(x), cos, sin, past, future)
        x = x + a
        gu = self.mlp_norm(x) @ self.w_gate_up
        gate, up = gu[..., : self.cfg.d_ff], gu[..., self.cfg.d_ff :]
        x = x + (gate * torch.sigmoid(gate) * up) @ self.w_down
        return x, present


class TinyLM(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if not cfg.tie_embeddings:
            self.w_head = nn.Parameter(torch.empty(cfg.d_model, cfg.vocab_size))
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self, generator):
        """Normal(0, 0.02) everywhere; the two matrices that write into the residual
        stream scaled down by 1/sqrt(2 * n_layers) (GPT-2's scheme); norms at 1."""
        std = 0.02
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("w_o") or name.endswith("w_down"):
                    p.normal_(0.0, std / math.sqrt(2 * self.cfg.n_layers), generator=generator)
                else:
                    p.normal_(0.0, std, generator=generator)

    def head_weight(self):
        return self.embed.t() if self.cfg.tie_embeddings else self.w_head

    def forward(self, input_ids, position_ids=None, past=None, fused=False):
        """input_ids [B,S] int64; position_ids [B,S] (default P..P+S-1, the same for
        every row); past: list of (k, v) per layer, each [B,kv,P,hd], or None.
        Returns logits [B,S,V] and the list of present (k, v) [B,kv,P+S,hd]."""
        B, S = input_ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(P, P + S).unsqueeze(0)
        pos = position_ids[0]
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]
        q_pos = torch.arange(P, P + S)
        k_pos = torch.arange(0, P + S)
        future = None if fused else q_pos.unsqueeze(1) < k_pos.unsqueeze(0)
        assert not (fused and past is not None)
        x = self.embed[input_ids]
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, cos, sin, None if past is None else past[i], future)
            presents.append(present)
        logits = self.final_norm(x) @ self.head_weight()
        return logits, presents

    def loss(self, input_ids, targets):
        logits, _ = self.forward(input_ids, fused=True)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def count_params(model: TinyLM):
    return sum(p.numel() for p in model.parameters())
