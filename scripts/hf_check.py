#!/usr/bin/env python3
"""Loads what gen writes with transformers and compares it with gen.

Trains a tiny BPE model with gen, exports it (`gen export --hf DIR`), then with the transformers
that this Python has:
  - GPT2LMHeadModel.from_pretrained(DIR): logits equal those of scripts/reference.py's model on
    gen's checkpoint (gen's maths, checked against gen by the parity tests) within 1e-5, and the
    mean loss over a text equals `gen eval`'s within 1e-5;
  - AutoTokenizer.from_pretrained(DIR): ids equal `gen tokenize`'s;
  - gen's checkpoint file itself, with that config.json beside it, loads too.
Run it under each transformers version, e.g.:
  python3 scripts/hf_check.py                      # transformers 5.x
  python3 -m venv --system-site-packages /tmp/tf4 && /tmp/tf4/bin/pip install "transformers<5"
  /tmp/tf4/bin/python scripts/hf_check.py          # transformers 4.x
"""
import json, os, shutil, subprocess, sys, tempfile
import torch, transformers
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2LMHeadModel
sys.path.insert(0, os.path.dirname(__file__))
import reference

root = os.path.join(os.path.dirname(__file__), "..")
gen = os.path.join(root, ".build", "release", "gen")

def main():
    tmp = tempfile.mkdtemp(prefix="gen-hf-")
    text = open(os.path.join(root, "data", "kjv.txt"), encoding="utf-8").read()
    corpus, held = os.path.join(tmp, "c.txt"), os.path.join(tmp, "held.txt")
    open(corpus, "w").write(text[:100000]); open(held, "w").write(text[200000:204000])
    m = os.path.join(tmp, "m.safetensors")
    subprocess.run([gen, "train", corpus, "--tokenizer", "bpe", "--vocab-size", "512", "--layers", "2", "--heads", "2",
                    "--embd", "64", "--context", "64", "--steps", "50", "--out", m, "--quiet"], check=True)
    d = os.path.join(tmp, "hf")
    subprocess.run([gen, "export", "--from", m, "--hf", d], check=True, capture_output=True)

    model = GPT2LMHeadModel.from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    samples = ["In the beginning God created the heaven and the earth.", "And Moses said unto the LORD, 12 3  x\n\n"]
    ids_hf = [tok(s)["input_ids"] for s in samples]
    ids_gen = [[int(x) for x in subprocess.run([gen, "tokenize", "-m", m], input=s.replace("\n", " ") + "\n",
                capture_output=True, text=True, check=True).stdout.split()] for s in samples]
    ids_hf = [tok(s.replace("\n", " "))["input_ids"] for s in samples]
    assert ids_hf == ids_gen, (ids_hf, ids_gen)

    params = {k: v.float() for k, v in load_file(m).items()}
    meta = json.loads(subprocess.run([gen, "info", m, "--json"], capture_output=True, text=True, check=True).stdout)
    cfg = meta["config"]
    idx = torch.tensor([ids_gen[0][:64]])
    with torch.no_grad():
        hf_logits = model(idx).logits
        ref_logits, _ = reference.forward(params, cfg, idx)
    err = ((hf_logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    assert err < 1e-5, err

    # gen eval's loss: consecutive windows of the context over the text's tokens.
    x = tok(open(held).read())["input_ids"]
    T, total, n = cfg["block_size"], 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x) - 1, T):
            inp = torch.tensor([x[s:min(s + T, len(x) - 1)]]); tgt = torch.tensor([x[s + 1:min(s + T, len(x) - 1) + 1]])
            loss = torch.nn.functional.cross_entropy(model(inp).logits[0], tgt[0], reduction="sum")
            total += loss.item(); n += inp.shape[1]
    g = json.loads(subprocess.run([gen, "eval", "-m", m, held, "--json"], capture_output=True, text=True, check=True).stdout)
    assert abs(total / n - g["loss"]) < 1e-5, (total / n, g["loss"])

    # gen's own checkpoint file, with the exported config.json beside it.
    d2 = os.path.join(tmp, "raw"); os.mkdir(d2)
    shutil.copy(m, os.path.join(d2, "model.safetensors")); shutil.copy(os.path.join(d, "config.json"), d2)
    with torch.no_grad():
        raw = GPT2LMHeadModel.from_pretrained(d2).eval()(idx).logits
    assert torch.equal(raw, hf_logits)
    print(json.dumps({"transformers": transformers.__version__, "logits_rel_err": err, "loss_hf": total / n,
                      "loss_gen": g["loss"], "ids_equal": True}))
    shutil.rmtree(tmp)

if __name__ == "__main__":
    main()
