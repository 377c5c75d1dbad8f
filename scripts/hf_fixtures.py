#!/usr/bin/env python3
"""Hugging Face GPT-2 fixtures for gen's tests (no network: random weights, save_pretrained).

Writes Tests/GenKitTests/Fixtures/hf/<name>/ folders as transformers saves them, each with
`expected.safetensors` holding token ids and transformers' logits for them:
  lmhead   GPT2LMHeadModel, F32 (tensor names with the `transformer.` prefix), tokenizer.json
  base     GPT2Model, F32 (names without the prefix), vocab.json + merges.txt
  half     GPT2LMHeadModel saved in F16 (logits from the F16 weights in F32 maths)
  gelu     exact GELU, n_inner 40 (not 4·n_embd), layer_norm_epsilon 1e-6
  sharded  GPT2LMHeadModel saved in shards with model.safetensors.index.json
and tokenizer_ids.json: GPT2TokenizerFast's ids for test texts.

Usage: pip install "torch==2.13.0+cpu" transformers tokenizers safetensors
       python3 scripts/hf_fixtures.py
"""
import json, os, shutil
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2TokenizerFast

root = os.path.join(os.path.dirname(__file__), "..")
out = os.path.join(root, "Tests", "GenKitTests", "Fixtures", "hf")
TEXTS = ["In the beginning God created the heaven and the earth.",
         "And God said, Let there be light: and there was light.<|endoftext|>Then 1234 words  of   text\n\nend",
         "naïve café — “quotes” ’s don't 日本語 🙂"]

def tokenizer():
    text = open(os.path.join(root, "data", "kjv.txt"), encoding="utf-8").read()[:200000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok

def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok = tokenizer()
    V = tok.get_vocab_size()
    torch.manual_seed(0)
    ids = torch.tensor([[5, 17, 250, 3, 99, 1, 42, 7, 200, 11, 0, 64]], dtype=torch.long)
    base = dict(n_layer=2, n_head=2, n_embd=16, n_positions=16, vocab_size=V,
                bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|endoftext|>"))
    variants = {
        "lmhead": (GPT2Config(**base), GPT2LMHeadModel, {}, "json"),
        "base": (GPT2Config(**base), GPT2Model, {}, "files"),
        "half": (GPT2Config(**base), GPT2LMHeadModel, {"half": True}, "json"),
        "gelu": (GPT2Config(**base, activation_function="gelu", n_inner=40, layer_norm_epsilon=1e-6), GPT2LMHeadModel, {}, "json"),
        "sharded": (GPT2Config(**base), GPT2LMHeadModel, {"max_shard_size": "20KB"}, "json"),
    }
    for name, (config, cls, opts, tokform) in variants.items():
        model = cls(config).eval()
        with torch.no_grad():   # non-zero biases and LayerNorm parameters
            for n, p in model.named_parameters():
                if n.endswith("bias") or ".ln_" in n:
                    p.add_(0.1 * torch.randn_like(p))
        d = os.path.join(out, name)
        if opts.get("half"):
            model = model.half()
            model.save_pretrained(d, safe_serialization=True)
            model = model.float()
        else:
            model.save_pretrained(d, safe_serialization=True, max_shard_size=opts.get("max_shard_size", "5GB"))
        with torch.no_grad():
            if cls is GPT2Model:
                h = model(ids).last_hidden_state
                logits = h @ model.wte.weight.T
            else:
                logits = model(ids).logits
        save_file({"inputs": ids.to(torch.int32).contiguous(), "logits": logits[0].float().contiguous()},
                  os.path.join(d, "expected.safetensors"))
        if tokform == "json":
            tok.save(os.path.join(d, "tokenizer.json"))
        else:
            tok.model.save(d)   # vocab.json, merges.txt
    fast = GPT2TokenizerFast(tokenizer_object=tok)
    json.dump({"texts": TEXTS, "ids": [fast(t)["input_ids"] for t in TEXTS]},
              open(os.path.join(out, "tokenizer_ids.json"), "w"), ensure_ascii=False)
    print("wrote", out)

if __name__ == "__main__":
    main()
