#!/usr/bin/env python3
"""PyTorch reference for gen's DPO loss (gen prefer): writes Tests/GenKitTests/Fixtures/dpo.safetensors.

Takes the weights of Fixtures/gpt_tiny.safetensors (scripts/reference.py's model), three
preference pairs whose prompts and completions have different lengths, and reference
log-probabilities from a perturbed copy of the weights (so that the policy and the reference
differ, as they do after the first step). The loss is written out from its formula:

  loss = mean over pairs of −log σ(β·[(log πθ(c) − log πref(c)) − (log πθ(r) − log πref(r))])

with log π(x) summed over the completion's tokens only. Stored: the pairs' tokens, the
reference and policy log-probabilities, the loss, TRL's reward metrics, and the gradient of
every parameter. This is TRL's default ("sigmoid") loss, `-F.logsigmoid(beta * delta_score)`
with delta_score = chosen_logratios - rejected_logratios in DPOTrainer._compute_loss (TRL 1.16),
whose rewards/* metrics are beta * the log-ratios, as here.

Usage: pip install "torch==2.13.0+cpu" safetensors numpy; python3 scripts/dpo_reference.py
"""
import json, os, sys
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import forward, layer_names

fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "GenKitTests", "Fixtures")
BETA = 0.1

def main():
    torch.set_num_threads(1)
    src = os.path.join(fixtures, "gpt_tiny.safetensors")
    with safe_open(src, "pt") as f:
        meta = f.metadata()
        cfg = json.loads(meta["config"])
        params = {n: f.get_tensor(n).float().requires_grad_(True) for n in layer_names(cfg["n_layer"])}
    T, V = cfg["block_size"], cfg["vocab_size"]
    g = torch.Generator().manual_seed(11)
    # (prompt, chosen, rejected) lengths: different prompts and completions; one pair fills the context.
    lengths = [(3, 5, 2), (1, 7, 6), (6, 1, 4), (4, 13, 9)]
    pairs = [tuple(torch.randint(0, V, (n,), generator=g) for n in ls) for ls in lengths]
    Tb = max(len(p) + max(len(c), len(r)) - 1 for p, c, r in pairs)
    assert Tb <= T
    rows, targets = [], []
    for p, c, r in pairs:
        for comp in (c, r):
            seq = torch.cat([p, comp])
            x = torch.zeros(Tb, dtype=torch.long)
            y = torch.full((Tb,), -1, dtype=torch.long)
            x[:len(seq) - 1] = seq[:-1]
            for t in range(len(seq) - 1):
                if t + 1 >= len(p):
                    y[t] = seq[t + 1]
            rows.append(x)
            targets.append(y)
    x = torch.stack(rows)
    y = torch.stack(targets)

    def logps(ps):
        logits, _ = forward(ps, cfg, x)
        lp = F.log_softmax(logits.double(), dim=-1)
        mask = y >= 0
        picked = lp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * mask).sum(-1)

    with torch.no_grad():
        noise = torch.Generator().manual_seed(5)
        ref_params = {n: t + 0.05 * torch.randn(t.shape, generator=noise) for n, t in params.items()}
        ref = logps(ref_params)
    pol = logps(params)
    chosen = BETA * (pol[0::2] - ref[0::2])
    rejected = BETA * (pol[1::2] - ref[1::2])
    losses = -F.logsigmoid(chosen - rejected)
    loss = losses.mean()
    loss.backward()
    print("loss", loss.item(), "per pair", losses.tolist())

    out = {"reference": ref.double(), "policy": pol.detach().double(), "loss": loss.detach().double().reshape(1),
           "rewards": torch.tensor([chosen.mean().item(), rejected.mean().item(), (chosen > rejected).double().mean().item(),
                                    (chosen - rejected).mean().item()], dtype=torch.float64)}
    for k, (p, c, r) in enumerate(pairs):
        out[f"prompt.{k}"], out[f"chosen.{k}"], out[f"rejected.{k}"] = p.int(), c.int(), r.int()
    for n, t in params.items():
        out["grad." + n] = t.grad.detach().clone()
    path = os.path.join(fixtures, "dpo.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path,
              metadata={"config": meta["config"], "beta": str(BETA), "pairs": str(len(pairs)), "context": str(Tb)})
    print("wrote", path)

if __name__ == "__main__":
    main()
