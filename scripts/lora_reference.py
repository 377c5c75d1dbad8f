#!/usr/bin/env python3
"""PEFT reference for gen's LoRA: writes Tests/GenKitTests/Fixtures/lora/.

Takes the tiny Hugging Face GPT-2 of Fixtures/hf/lmhead, wraps it with PEFT (r 4, alpha 8, all
four targets, fan_in_fan_out for GPT-2's Conv1D), sets B to non-zero values, and saves the
adapter with save_pretrained (adapter/). expected.safetensors holds a batch, transformers+PEFT's
logits and loss (mean cross-entropy of every position), the gradient of every adapter tensor,
and the adapters after 10 AdamW steps (lr 1e-2, betas 0.9/0.99, eps 1e-8, weight decay 0.1,
no clipping) on that batch.

Usage: pip install "torch==2.13.0+cpu" transformers peft safetensors; python3 scripts/lora_reference.py
"""
import os, shutil
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

root = os.path.join(os.path.dirname(__file__), "..")
fixtures = os.path.join(root, "Tests", "GenKitTests", "Fixtures")
out = os.path.join(fixtures, "lora")

def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(1)
    base = GPT2LMHeadModel.from_pretrained(os.path.join(fixtures, "hf", "lmhead")).eval()
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"],
                        fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, config).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in params.items():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn_like(p))
    model.peft_config["default"].base_model_name_or_path = "Fixtures/hf/lmhead"
    model.save_pretrained(os.path.join(out, "adapter"))
    B, T, V = 2, 8, base.config.vocab_size
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    logits = model(input_ids=x).logits
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    def key(n):   # PEFT's saved name: without the adapter name
        return n.replace(".default", "")
    tensors = {"inputs": x.to(torch.int32), "targets": y.to(torch.int32), "logits": logits.detach().reshape(B * T, V),
               "loss": loss.detach().reshape(1)}
    for n, p in params.items():
        tensors["grad." + key(n)] = p.grad.detach().clone()
    opt = torch.optim.AdamW(params.values(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    opt.zero_grad()
    for _ in range(10):
        opt.zero_grad()
        l = F.cross_entropy(model(input_ids=x).logits.reshape(-1, V), y.reshape(-1))
        l.backward()
        opt.step()
    for n, p in params.items():
        tensors["after." + key(n)] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "expected.safetensors"))
    print("wrote", out, sorted(os.listdir(os.path.join(out, "adapter"))))

if __name__ == "__main__":
    main()
