#!/usr/bin/env python3
"""Loads an adapter that gen trained with PEFT and compares it with gen.

Finetunes LoRA adapters with gen on the tiny Hugging Face GPT-2 of the test fixtures, then
PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), adapter): the mean loss over a
text in consecutive context windows equals `gen eval --adapter`'s, and the merged model gen
writes (`gen merge`) gives the same loss through transformers.
Usage: pip install "torch==2.13.0+cpu" transformers peft safetensors; python3 scripts/lora_check.py
"""
import json, os, shutil, subprocess, tempfile
import torch
from peft import PeftModel
from transformers import GPT2LMHeadModel, AutoTokenizer

root = os.path.join(os.path.dirname(__file__), "..")
gen = os.path.join(root, ".build", "release", "gen")
base = os.path.join(root, "Tests", "GenKitTests", "Fixtures", "hf", "lmhead")

def loss(model, ids, T):
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, T):
            e = min(s + T, len(ids) - 1)
            logits = model(torch.tensor([ids[s:e]])).logits[0]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[s + 1:e + 1]), reduction="sum").item()
            n += e - s
    return total / n

def main():
    tmp = tempfile.mkdtemp(prefix="gen-lora-")
    text = open(os.path.join(root, "data", "kjv.txt"), encoding="utf-8").read()
    corpus, held = os.path.join(tmp, "c.txt"), os.path.join(tmp, "held.txt")
    open(corpus, "w").write(text[:60000]); open(held, "w").write(text[300000:303000])
    adapter = os.path.join(tmp, "adapter")
    subprocess.run([gen, "finetune", "--from", base, corpus, "--lora", "4", "--out", adapter, "--steps", "30",
                    "--batch", "4", "--lr", "1e-2", "--quiet"], check=True)
    g = json.loads(subprocess.run([gen, "eval", "-m", base, "--adapter", adapter, held, "--json"],
                                  capture_output=True, text=True, check=True).stdout)
    tok = AutoTokenizer.from_pretrained(base)
    ids = tok(open(held).read())["input_ids"]
    model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), adapter).eval()
    T = model.config.n_positions
    peft_loss = loss(model, ids, T)
    plain = loss(GPT2LMHeadModel.from_pretrained(base).eval(), ids, T)
    merged = os.path.join(tmp, "merged.safetensors")
    subprocess.run([gen, "merge", "--from", base, "--adapter", adapter, "--out", merged], check=True, capture_output=True)
    d = os.path.join(tmp, "merged"); os.mkdir(d)
    shutil.copy(merged, os.path.join(d, "model.safetensors")); shutil.copy(os.path.join(base, "config.json"), d)
    merged_loss = loss(GPT2LMHeadModel.from_pretrained(d).eval(), ids, T)
    print(json.dumps({"gen_eval_with_adapter": g["loss"], "peft": peft_loss, "merged_in_transformers": merged_loss,
                      "base_without_adapter": plain}))
    assert abs(g["loss"] - peft_loss) < 1e-5 and abs(merged_loss - peft_loss) < 1e-5 and abs(plain - peft_loss) > 1e-3
    shutil.rmtree(tmp)

if __name__ == "__main__":
    main()
