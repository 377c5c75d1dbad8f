#!/usr/bin/env python3
"""Random-weight GPT-2 models for the decoding comparisons in scripts/bench-decode, the same
weights in each runtime's format (no network: transformers' GPT2LMHeadModel, seeded):

  hf FOLDER --layers L --heads H --embd C --context T --vocab V
      a Hugging Face folder (config.json, model.safetensors, tokenizer.json: a byte-level BPE of
      300 tokens trained on data/kjv.txt; the model's vocabulary is V) that gen reads
  gguf FOLDER OUT.gguf --type f32|q8_0
      the folder as a GGUF file for llama.cpp (architecture gpt2, the tied output layer read from
      token_embd), the tokenizer padded with unused tokens to the vocabulary
  llamacpp OUT.gguf --tokens N --threads T
      decodes N tokens greedily after a one-token prompt with llama.cpp (llama-cpp-python) and
      prints {"tokens_per_s"}: the time from the first token's evaluation to the last's, in
      process, as gen's own figure
  llama2c FOLDER OUT_DIR
      a model of the same width, depth, heads, context and vocabulary in llama2.c's checkpoint
      format (model.bin, version 0 header, shared classifier) with tokenizer.bin: llama2.c runs
      Llama's block (RMSNorm, RoPE, SwiGLU of hidden width 8C/3, which has the parameters of
      GPT-2's 4C GELU MLP: 768 for C 288, as stories15M), so its work per token matches GPT-2's
      shape but its weights are not these

Usage: pip install "torch==2.13.0+cpu" transformers tokenizers safetensors gguf numpy llama-cpp-python
"""
import argparse, json, os, struct
import numpy as np

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def hf(args):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import GPT2Config, GPT2LMHeadModel
    text = open(os.path.join(root, "data", "kjv.txt"), encoding="utf-8").read()[:200000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    torch.manual_seed(0)
    eot = tok.token_to_id("<|endoftext|>")
    config = GPT2Config(n_layer=args.layers, n_head=args.heads, n_embd=args.embd, n_positions=args.context,
                        vocab_size=args.vocab, bos_token_id=eot, eos_token_id=eot)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(args.folder, safe_serialization=True)
    tok.save(os.path.join(args.folder, "tokenizer.json"))


def load(folder):
    from safetensors.numpy import load_file
    config = json.load(open(os.path.join(folder, "config.json")))
    w = {k.removeprefix("transformer."): v.astype(np.float32) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    return config, w


def gguf_file(args):
    import gguf
    config, w = load(args.folder)
    L, C, V, T = config["n_layer"], config["n_embd"], config["vocab_size"], config["n_positions"]
    kind = {"f32": gguf.GGMLQuantizationType.F32, "q8_0": gguf.GGMLQuantizationType.Q8_0}[args.type]
    out = gguf.GGUFWriter(args.out, "gpt2")
    out.add_context_length(T)
    out.add_embedding_length(C)
    out.add_feed_forward_length(4 * C)
    out.add_block_count(L)
    out.add_head_count(config["n_head"])
    out.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-5))
    out.add_file_type(gguf.LlamaFileType.ALL_F32 if args.type == "f32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = json.load(open(os.path.join(args.folder, "tokenizer.json")))["model"]
    tokens = sorted(vocab["vocab"], key=vocab["vocab"].get)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    eot = vocab["vocab"]["<|endoftext|>"]
    types[eot] = gguf.TokenType.CONTROL
    tokens += [f"<|unused{i}|>" for i in range(V - len(tokens))]
    types += [gguf.TokenType.UNUSED] * (V - len(types))
    merges = [m if isinstance(m, str) else " ".join(m) for m in vocab["merges"]]
    out.add_tokenizer_model("gpt2")
    out.add_tokenizer_pre("gpt-2")
    out.add_token_list(tokens)
    out.add_token_types(types)
    out.add_token_merges(merges)
    out.add_bos_token_id(eot)
    out.add_eos_token_id(eot)

    def tensor(name, a, quantize=True):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if kind == gguf.GGMLQuantizationType.Q8_0 and quantize and a.ndim == 2:
            out.add_tensor(name, gguf.quants.quantize(a, kind), raw_dtype=kind)
        else:
            out.add_tensor(name, a)
    tensor("token_embd.weight", w["wte.weight"])
    tensor("position_embd.weight", w["wpe.weight"], quantize=False)
    for l in range(L):
        p = f"h.{l}."
        tensor(f"blk.{l}.attn_norm.weight", w[p + "ln_1.weight"])
        tensor(f"blk.{l}.attn_norm.bias", w[p + "ln_1.bias"])
        tensor(f"blk.{l}.attn_qkv.weight", w[p + "attn.c_attn.weight"].T)   # Conv1D (K,N) -> (N,K)
        tensor(f"blk.{l}.attn_qkv.bias", w[p + "attn.c_attn.bias"])
        tensor(f"blk.{l}.attn_output.weight", w[p + "attn.c_proj.weight"].T)
        tensor(f"blk.{l}.attn_output.bias", w[p + "attn.c_proj.bias"])
        tensor(f"blk.{l}.ffn_norm.weight", w[p + "ln_2.weight"])
        tensor(f"blk.{l}.ffn_norm.bias", w[p + "ln_2.bias"])
        tensor(f"blk.{l}.ffn_up.weight", w[p + "mlp.c_fc.weight"].T)
        tensor(f"blk.{l}.ffn_up.bias", w[p + "mlp.c_fc.bias"])
        tensor(f"blk.{l}.ffn_down.weight", w[p + "mlp.c_proj.weight"].T)
        tensor(f"blk.{l}.ffn_down.bias", w[p + "mlp.c_proj.bias"])
    tensor("output_norm.weight", w["ln_f.weight"])
    tensor("output_norm.bias", w["ln_f.bias"])
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()


def llama2c(args):
    config, _ = load(args.folder)
    L, C, V, T, NH = config["n_layer"], config["n_embd"], config["vocab_size"], config["n_positions"], config["n_head"]
    H = 8 * C // 3
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    with open(os.path.join(args.out, "model.bin"), "wb") as f:
        # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (positive: shared classifier), seq_len
        f.write(struct.pack("7i", C, H, L, NH, NH, V, T))
        parts = [normal(V, C), np.ones((L, C), np.float32)]
        parts += [normal(L, C, C) for _ in range(4)]           # wq, wk, wv, wo
        parts += [np.ones((L, C), np.float32)]                 # rms_ffn_weight
        parts += [normal(L, H, C), normal(L, C, H), normal(L, H, C)]   # w1, w2, w3
        parts += [np.ones(C, np.float32)]                      # rms_final_weight
        head = C // NH
        parts += [np.zeros((T, head // 2), np.float32)] * 2    # freq_cis_real, freq_cis_imag (unused by run.c)
        for p in parts:
            f.write(np.ascontiguousarray(p).tobytes())
    with open(os.path.join(args.out, "tokenizer.bin"), "wb") as f:
        f.write(struct.pack("i", 16))
        for i in range(V):
            piece = bytes([i]) if i < 256 else f"<{i}>".encode()
            f.write(struct.pack("fi", 0.0, len(piece)) + piece)


def llamacpp(args):
    import time
    from llama_cpp import Llama
    llm = Llama(args.gguf, n_ctx=args.tokens + 1, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    scores = None
    start = time.perf_counter()
    token = 0
    for _ in range(args.tokens):
        llm.eval([token])
        scores = llm.scores[llm.n_tokens - 1]
        token = int(np.argmax(scores))
    print(json.dumps({"tokens_per_s": args.tokens / (time.perf_counter() - start)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("hf")
    a.add_argument("folder")
    for name, default in [("layers", 12), ("heads", 12), ("embd", 768), ("context", 1024), ("vocab", 50257)]:
        a.add_argument("--" + name, type=int, default=default)
    a = sub.add_parser("gguf")
    a.add_argument("folder"); a.add_argument("out"); a.add_argument("--type", default="f32", choices=["f32", "q8_0"])
    a = sub.add_parser("llamacpp")
    a.add_argument("gguf"); a.add_argument("--tokens", type=int, default=255); a.add_argument("--threads", type=int, default=2)
    a = sub.add_parser("llama2c")
    a.add_argument("folder"); a.add_argument("out")
    args = ap.parse_args()
    {"hf": hf, "gguf": gguf_file, "llamacpp": llamacpp, "llama2c": llama2c}[args.cmd](args)


if __name__ == "__main__":
    main()
