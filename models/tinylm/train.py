"""Trains shakespeare-llama, single-threaded and deterministic.

Usage: python train.py <work_dir>

Reads work_dir/{train_ids,heldout_ids,heldout_chat_ids}.npy and corpus.json (from
data.py); writes work_dir/model.pt (state dict and config) and work_dir/train.json
(loss curve, wall time, held-out perplexity of the trained model).

Optimisation: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices, none on norm
weights), batches of BATCH random windows of n_ctx+1 tokens drawn with a seeded
numpy generator, learning rate warmed up linearly for WARMUP steps then cosine-decayed
to a tenth, gradients clipped at norm 1. Every seed is fixed, torch runs one thread
with deterministic algorithms, so a rerun on the same machine gives the same weights.
STEPS can be overridden with the environment variable TINYLM_STEPS (for smoke tests).
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common
from model import TinyLM, count_params

STEPS = int(os.environ.get("TINYLM_STEPS", "1200"))
BATCH = 8
LR = 2e-3
LR_MIN = 2e-4
WARMUP = 50
WEIGHT_DECAY = 0.1
CLIP = 1.0
LOG_EVERY = 50


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR_MIN + 0.5 * (LR - LR_MIN) * (1.0 + math.cos(math.pi * t))


def evaluate(model, work, corpus):
    cfg = model.cfg
    out = {}
    with torch.no_grad():
        fn = lambda ids: model(torch.from_numpy(ids))[0][0].numpy()  # noqa: E731
        for name, n_bytes in (("heldout", corpus["heldout_bytes"]), ("heldout_chat", None)):
            stream = np.load(work / f"{name}_ids.npy")
            nll, n = common.heldout_nll(stream, cfg.n_ctx, fn)
            out[name] = common.perplexity_report(nll, n, n_bytes)
    return out


def main(work_dir):
    common.single_thread()
    common.seed_everything()
    work = Path(work_dir)
    corpus = json.loads((work / "corpus.json").read_text())
    cfg = common.model_config()
    train_ids = torch.from_numpy(np.load(work / "train_ids.npy").astype(np.int64))
    model = TinyLM(cfg)
    model.init_weights(torch.Generator().manual_seed(common.SEED))
    n_params = count_params(model)
    print(f"{common.MODEL_ID}: {n_params} parameters, {len(train_ids)} training tokens, "
          f"{STEPS} steps of {BATCH}x{cfg.n_ctx}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    rng = np.random.Generator(np.random.PCG64(common.SEED))
    offsets = torch.arange(cfg.n_ctx + 1)
    log, window, t0 = [], [], time.time()
    model.train()
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        starts = torch.from_numpy(rng.integers(0, len(train_ids) - cfg.n_ctx - 1, size=BATCH))
        chunk = train_ids[starts[:, None] + offsets[None, :]]
        loss = model.loss(chunk[:, :-1], chunk[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        window.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == STEPS:
            entry = {"step": step + 1, "loss": sum(window) / len(window),
                     "lr": lr_at(step), "seconds": round(time.time() - t0, 1)}
            log.append(entry)
            window = []
            print(entry, flush=True)
    train_seconds = time.time() - t0

    model.eval()
    t1 = time.time()
    metrics = evaluate(model, work, corpus)
    print(metrics, flush=True)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, work / "model.pt")
    common.write_json(work / "train.json", {
        "parameters": n_params,
        "steps": STEPS, "batch": BATCH, "n_ctx": cfg.n_ctx,
        "tokens_seen": STEPS * BATCH * cfg.n_ctx,
        "train_tokens": len(train_ids),
        "lr": LR, "lr_min": LR_MIN, "warmup": WARMUP, "weight_decay": WEIGHT_DECAY,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.time() - t1, 1),
        "threads": torch.get_num_threads(),
        "log": log,
        "torch_fp32": metrics,
    })


if __name__ == "__main__":
    main(sys.argv[1])
