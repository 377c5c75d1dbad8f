#!/usr/bin/env python3
"""PyTorch reference for gen's engine: the same GPT-2 model, written out layer by layer.

  python3 scripts/reference.py fixtures            # rewrite Tests/GenKitTests/Fixtures/*.safetensors
  python3 scripts/reference.py train  --layers 4 --heads 4 --embd 128 --context 64 --batch 12
  python3 scripts/reference.py decode --layers 6 --heads 6 --embd 384 --context 256
  python3 scripts/reference.py products 4096,384,1152,NN 384,4096,1152,TN   # torch.mm GFLOP/s
  python3 scripts/reference.py check-checkpoint model.safetensors   # safe_open reads gen's file
  python3 scripts/reference.py recipe CORPUS      # nanoGPT's CPU recipe, for loss and wall time

Needs torch (pip install "torch==2.13.0+cpu"), numpy and safetensors; gen's tests do not.
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn.functional as F


def layer_names(n_layer):
    names = ["wte.weight", "wpe.weight"]
    for i in range(n_layer):
        for s in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                  "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                  "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            names.append(f"h.{i}.{s}")
    return names + ["ln_f.weight", "ln_f.bias"]


def shapes(cfg):
    L, C, V, T = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["block_size"]
    out = {"wte.weight": (V, C), "wpe.weight": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(L):
        p = f"h.{i}."
        out.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "attn.c_attn.weight": (C, 3 * C),
                    p + "attn.c_attn.bias": (3 * C,), p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                    p + "ln_2.weight": (C,), p + "ln_2.bias": (C,), p + "mlp.c_fc.weight": (C, 4 * C),
                    p + "mlp.c_fc.bias": (4 * C,), p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,)})
    return out


def init_params(cfg, seed):
    """GPT-2 initialisation; LayerNorm and biases randomised a little so that their gradients are tested."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in shapes(cfg).items():
        if len(shape) == 2:
            std = 0.02 / math.sqrt(2 * cfg["n_layer"]) if name.endswith("c_proj.weight") else 0.02
            t = torch.randn(shape, generator=g) * std
        elif name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.02 * torch.randn(shape, generator=g)
        params[name] = t.float().requires_grad_(True)
    return params


def forward(params, cfg, idx, targets=None, sdpa=False):
    """idx (B,T) -> logits (B,T,V), loss. Weights are [in, out] as GPT-2's Conv1D."""
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    hs = C // NH
    x = params["wte.weight"][idx] + params["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        p = lambda s: params[f"h.{i}.{s}"]
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NH, hs).transpose(1, 2)
        v = v.view(B, T, NH, hs).transpose(1, 2)
        if sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~mask, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + (y @ p("attn.c_proj.weight") + p("attn.c_proj.bias"))
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + (h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
    logits = x @ params["wte.weight"].t()
    loss = None
    if targets is not None:
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
    return logits, loss


def make_optimizer(params, lr, betas, eps, wd, fused=False):
    decay = [t for t in params.values() if t.dim() >= 2]
    no_decay = [t for t in params.values() if t.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps)


def write_fixture(path, cfg, B, T, seed):
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    params = init_params(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    data = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
    idx, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    out = {n: t.detach().clone() for n, t in params.items()}
    out["inputs"] = idx.to(torch.int32)
    out["targets"] = targets.to(torch.int32)
    logits, loss = forward(params, cfg, idx, targets)
    loss.backward()
    out["logits"] = logits.detach().clone()
    out["loss"] = loss.detach().reshape(1).clone()
    for n, t in params.items():
        out["grad." + n] = t.grad.detach().clone()
    opt = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=10)
    optimizer = make_optimizer(params, opt["lr"], (opt["beta1"], opt["beta2"]), opt["eps"], opt["weight_decay"])
    losses = []
    for step in range(opt["steps"]):
        optimizer.zero_grad(set_to_none=True)
        _, loss = forward(params, cfg, idx, targets)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), opt["grad_clip"])
        optimizer.step()
    out["step_losses"] = torch.tensor(losses, dtype=torch.float32)
    for n, t in params.items():
        out["after." + n] = t.detach().clone()
    meta = {"config": json.dumps(cfg), "batch": str(B), "context": str(T), "optimizer": json.dumps(opt),
            "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path}: loss {out['loss'].item():.6f}, {sum(t.numel() for t in params.values())} parameters")


def cmd_fixtures(args):
    torch.set_num_threads(1)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "GenKitTests", "Fixtures")
    os.makedirs(here, exist_ok=True)
    write_fixture(os.path.join(here, "gpt_tiny.safetensors"),
                  dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=65), B=4, T=16, seed=1337)
    # n_embd not a multiple of 16 (head size 9), context not a multiple of 8.
    write_fixture(os.path.join(here, "gpt_odd.safetensors"),
                  dict(n_layer=2, n_head=4, n_embd=36, block_size=13, vocab_size=37), B=3, T=13, seed=7)


def cmd_train(args):
    torch.set_num_threads(args.threads)
    cfg = dict(n_layer=args.layers, n_head=args.heads, n_embd=args.embd, block_size=args.context, vocab_size=args.vocab)
    params = init_params(cfg, 0)
    optimizer = make_optimizer(params, 1e-3, (0.9, 0.99), 1e-8, 0.1)
    g = torch.Generator().manual_seed(0)

    def batch():
        return torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=g)

    def step(data):
        x, y = data[:, :-1], data[:, 1:]
        _, loss = forward(params, cfg, x, y, sdpa=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()

    times = []
    for i in range(args.warmup + args.steps):
        data = batch()
        t0 = time.perf_counter()
        step(data)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    out = {"ms_per_step": ms, "tokens_per_s": args.batch * args.context / (ms / 1000)}
    if args.profile:
        # The share of the step's time in matrix products (torch.profiler, self times, 3 steps).
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step(batch())
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
        out["mm_share"] = mm / total
    print(json.dumps(out))


def cmd_products(args):
    """torch.mm's GFLOP/s (best of 7) on shapes M,K,N,AB: C (M,N) = op(A) (M,K) · op(B) (K,N),
    AB saying which operand is transposed (N/T), as scripts/sgemm_ceiling.c takes them."""
    torch.set_num_threads(args.threads)
    rates = []
    for shape in args.shapes:
        M, K, N, ab = shape.split(",")
        M, K, N = int(M), int(K), int(N)
        A = torch.rand(K, M).t() if ab[0] == "T" else torch.rand(M, K)
        B = torch.rand(N, K).t() if ab[1] == "T" else torch.rand(K, N)
        C = torch.empty(M, N)
        best = 1e9
        for _ in range(7):
            t0 = time.perf_counter()
            torch.mm(A, B, out=C)
            best = min(best, time.perf_counter() - t0)
        rates.append(2 * M * N * K / best / 1e9)
    print(json.dumps({"gflops": rates}))


def cmd_decode(args):
    torch.set_num_threads(args.threads)
    cfg = dict(n_layer=args.layers, n_head=args.heads, n_embd=args.embd, block_size=args.context, vocab_size=65)
    params = {k: v.detach() for k, v in init_params(cfg, 0).items()}
    C, NH, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hs = C // NH
    n_new = args.context - 1

    @torch.no_grad()
    def run():
        kc = torch.zeros(L, NH, args.context, hs)
        vc = torch.zeros(L, NH, args.context, hs)
        tok = 0
        g = torch.Generator().manual_seed(0)
        for pos in range(n_new):
            x = params["wte.weight"][tok] + params["wpe.weight"][pos]
            for i in range(L):
                p = lambda s: params[f"h.{i}.{s}"]
                h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
                q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C)
                kc[i, :, pos] = k.view(NH, hs)
                vc[i, :, pos] = v.view(NH, hs)
                att = (kc[i, :, :pos + 1] @ q.view(NH, hs, 1)).squeeze(-1) / math.sqrt(hs)
                y = (F.softmax(att, dim=-1).unsqueeze(1) @ vc[i, :, :pos + 1]).reshape(C)
                x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
                h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
                h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
                x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
            x = F.layer_norm(x, (C,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
            probs = F.softmax(x @ params["wte.weight"].t(), dim=-1)
            tok = torch.multinomial(probs, 1, generator=g).item()

    run()  # warm up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    print(json.dumps({"seconds": s, "tokens_per_s": n_new / s}))


def cmd_check_checkpoint(args):
    from safetensors import safe_open
    with safe_open(args.file, framework="pt") as f:
        meta = f.metadata()
        cfg = json.loads(meta["config"])
        assert meta["format"] == "gen" or meta.get("gen_format_version"), meta
        for name, shape in shapes(cfg).items():
            t = f.get_tensor(name)
            assert tuple(t.shape) == shape and t.dtype == torch.float32, (name, t.shape, t.dtype)
    print(f"ok: {args.file} read by safetensors.safe_open ({len(shapes(cfg))} tensors, config {cfg})")


def cmd_recipe(args):
    """nanoGPT's CPU recipe on a char-level corpus with this reference model."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = open(args.corpus, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    cfg = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=len(chars))
    params = init_params(cfg, args.seed)
    for name, t in params.items():  # GPT-2 init exactly: LayerNorm 1/0, biases 0
        with torch.no_grad():
            if t.dim() == 1:
                t.fill_(1.0 if (".ln_" in name or name.startswith("ln_f")) and name.endswith("weight") else 0.0)
    optimizer = make_optimizer(params, 1e-3, (0.9, 0.99), 1e-8, 0.1)
    B, T, steps, warmup, lr, min_lr = 12, 64, 2000, 100, 1e-3, 1e-4

    def batch(split):
        d = train if split == "train" else val
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])

    @torch.no_grad()
    def val_loss():
        return float(np.mean([forward(params, cfg, *batch("val"), sdpa=True)[1].item() for _ in range(20)]))

    t0 = time.time()
    for it in range(steps + 1):
        if it < warmup:
            cur = lr * (it + 1) / (warmup + 1)
        else:
            cur = min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (steps - warmup))) * (lr - min_lr)
        for gparam in optimizer.param_groups:
            gparam["lr"] = cur
        if it % 250 == 0:
            print(f"step {it}: val {val_loss():.4f} ({time.time() - t0:.1f}s)", flush=True)
        if it == steps:
            break
        x, y = batch("train")
        _, loss = forward(params, cfg, x, y, sdpa=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
    print(json.dumps({"val_loss": val_loss(), "seconds": time.time() - t0}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixtures")
    for name in ["train", "decode"]:
        p = sub.add_parser(name)
        p.add_argument("--layers", type=int, default=4)
        p.add_argument("--heads", type=int, default=4)
        p.add_argument("--embd", type=int, default=128)
        p.add_argument("--context", type=int, default=64)
        p.add_argument("--batch", type=int, default=12)
        p.add_argument("--vocab", type=int, default=65)
        p.add_argument("--threads", type=int, default=os.cpu_count())
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--repeats", type=int, default=3)
        if name == "train":
            p.add_argument("--profile", action="store_true", help="also report the step's share in matrix products")
    p = sub.add_parser("products")
    p.add_argument("shapes", nargs="+")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p = sub.add_parser("check-checkpoint")
    p.add_argument("file")
    p = sub.add_parser("recipe")
    p.add_argument("corpus")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    {"fixtures": cmd_fixtures, "train": cmd_train, "decode": cmd_decode,
     "check-checkpoint": cmd_check_checkpoint, "recipe": cmd_recipe, "products": cmd_products}[args.cmd](args)


if __name__ == "__main__":
    main()
