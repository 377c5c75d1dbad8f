#!/usr/bin/env python3
"""Reference fixtures and benchmarks for gen's byte-level BPE, from Hugging Face `tokenizers`
and `tiktoken` (pip install tokenizers tiktoken).

  python3 scripts/bpe_reference.py fixtures         # rewrite Tests/GenKitTests/Fixtures/bpe_*.json
  python3 scripts/bpe_reference.py train CORPUS --vocab-size 4096 --out tok.json   # time the trainer
  python3 scripts/bpe_reference.py encode tok.json CORPUS                          # MB/s, tokenizers and tiktoken
  python3 scripts/bpe_reference.py bytes-per-token tok.json CORPUS
"""
import argparse, json, os, sys, time

from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4 = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "def encode(self, text: str) -> list[int]:\n    return [self.vocab[c] for c in text]  # comment\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\treturn sum;",
    "3.14159265358979323846264338327950288419716939937510 and 1,000,000 and 2024-11-24 12:30:45",
    "a  b   c    d\t\te\n\nf\n \n g  \n\n\n   h   ",
    "   leading spaces and trailing spaces   ",
    "\n\n\nnewlines first\r\nthen CRLF\r\n\r\nend",
    "I'm sure you're right, they've said we'll go, he'd know, it's John's. I’m, you’re, it’s curly.",
    "DON'T SHOUT, I'LL HEAR YOU. We'Ve Mixed 'Cases' 'S 'LL",
    "Café résumé naïve façade coöperate Ærø Øresund ﬁnancial",
    "Καλημέρα κόσμε, η γλώσσα μου έδωσαν ελληνική.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "你好，世界。日本語のテキストも含みます。한국어 텍스트도 있습니다.",
    "مرحبا بالعالم، هذا نص عربي. שלום עולם",
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇺🇸 😀😃😄",
    "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0353 and ǅ titlecase and ⅻ roman",
    "Replacement \ufffd char, zero-width\u200bspace, no-break\u00a0space, ideographic\u3000space, nel\u0085x",
    "Supercalifragilisticexpialidocious" * 20,
    "x" * 300 + "y" * 5,
    "tabs\t\t\tand\u000bvertical\u000cform feeds",
    "!!!???...,,,;;; --- *** ### $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} ~~~",
    "'quoted' \"double\" `back` 's 't 're 've 'm 'll 'd ' ''",
    "",
    " ",
    "123 4567 89012 1 12 123 1234 12345 123456",
    "under_score snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    "https://example.com/path?query=1&b=2#frag email@example.org",
]


def gen_texts():
    return TEXTS


def build(pattern):
    tok = Tokenizer(models.BPE())
    if pattern == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(files, vocab_size, pattern="gpt2", special=()):
    tok = build(pattern)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
    tok.train(files, trainer)
    return tok


def cmd_fixtures(args):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "GenKitTests", "Fixtures")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    corpus = os.path.join(root, "data", "kjv.txt")
    extra = os.path.join("/tmp", "bpe-extra.txt")
    with open(extra, "w", encoding="utf-8") as f:
        f.write("\n".join(TEXTS * 3))
    for pattern in ["gpt2", "gpt4"]:
        tok = train_tokenizer([corpus, extra], 1000, pattern, special=["<|endoftext|>"])
        path = os.path.join(here, f"bpe_{pattern}.tokenizer.json")
        tok.save(path)
        ids = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
        for t, i in zip(TEXTS, ids):
            assert tok.decode(i) == t, (t, tok.decode(i))
        # The pre-tokenizer's chunks, as substrings of the text (offsets are in characters).
        chunks = [[t[a:b] for _, (a, b) in tok.pre_tokenizer.pre_tokenize_str(t)] for t in TEXTS]
        with open(os.path.join(here, f"bpe_{pattern}.expected.json"), "w", encoding="utf-8") as f:
            json.dump({"pattern": pattern, "texts": TEXTS, "ids": ids, "chunks": chunks}, f, ensure_ascii=False)
        print(f"wrote bpe_{pattern}: {tok.get_vocab_size()} tokens, {sum(map(len, ids))} ids")


def cmd_train(args):
    t0 = time.perf_counter()
    tok = train_tokenizer([args.corpus], args.vocab_size, args.pattern)
    dt = time.perf_counter() - t0
    if args.out:
        tok.save(args.out)
    print(json.dumps({"seconds": dt, "vocab_size": tok.get_vocab_size()}))


def tiktoken_from(tok_json):
    import tiktoken
    data = json.load(open(tok_json, encoding="utf-8"))
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {}
    for s, i in data["model"]["vocab"].items():
        ranks[bytes(byte_decoder[c] for c in s)] = i
    return tiktoken.Encoding("gen-bench", pat_str=GPT2, mergeable_ranks=ranks, special_tokens={})


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def cmd_encode(args):
    text = open(args.corpus, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    tok = Tokenizer.from_file(args.tokenizer)
    os.environ["RAYON_NUM_THREADS"] = "1"
    t0 = time.perf_counter(); ids = tok.encode(text, add_special_tokens=False).ids; t1 = time.perf_counter()
    enc = tiktoken_from(args.tokenizer)
    t2 = time.perf_counter(); ids2 = enc.encode_ordinary(text); t3 = time.perf_counter()
    print(json.dumps({"tokenizers_mb_s": mb / (t1 - t0), "tiktoken_mb_s": mb / (t3 - t2), "tokens": len(ids),
                      "same_ids": ids == ids2}))


def cmd_bytes_per_token(args):
    text = open(args.corpus, encoding="utf-8").read()
    tok = Tokenizer.from_file(args.tokenizer)
    n = len(tok.encode(text, add_special_tokens=False).ids)
    print(json.dumps({"bytes_per_token": len(text.encode("utf-8")) / n, "tokens": n}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixtures")
    p = sub.add_parser("train"); p.add_argument("corpus"); p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--pattern", default="gpt2"); p.add_argument("--out")
    p = sub.add_parser("encode"); p.add_argument("tokenizer"); p.add_argument("corpus")
    p = sub.add_parser("bytes-per-token"); p.add_argument("tokenizer"); p.add_argument("corpus")
    args = ap.parse_args()
    {"fixtures": cmd_fixtures, "train": cmd_train, "encode": cmd_encode, "bytes-per-token": cmd_bytes_per_token}[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    main()
