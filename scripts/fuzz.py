#!/usr/bin/env python3
"""Fuzzes gen through its binary with mutated model files, .state files, tokenizer.json files, and
the config.json of a Hugging Face folder and adapter_config.json of a PEFT adapter folder (copies
of the test fixtures).

Each mutant is handed to the command that reads it (gen info / sample for models and folders,
gen sample --adapter for adapters, gen train --resume for states, gen tokenize for tokenizers)
with a 10 s timeout. A run passes when it exits 0, or exits 1 or 64 with exactly one "Error:"
line and no crash report. Prints the counts.

Usage: scripts/fuzz.py [--count N] [--seed S] [--gen PATH]   (N mutants of each kind, default 700)
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=700)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gen", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "gen"))
    a = ap.parse_args()
    gen = os.path.abspath(a.gen)
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="gen-fuzz-")
    corpus = os.path.join(tmp, "c.txt")
    kjv = os.path.join(os.path.dirname(__file__), "..", "data", "kjv.txt")
    with open(kjv, encoding="utf-8") as f:
        open(corpus, "w", encoding="utf-8").write(f.read(40000))
    shape = ["--layers", "1", "--heads", "2", "--embd", "16", "--context", "16", "--batch", "4"]
    model = os.path.join(tmp, "m.safetensors")
    run([gen, "train", corpus, "--out", model, "--steps", "2", "--quiet", "--tokenizer", "bpe", "--vocab-size", "300"] + shape, check=True)
    tokjson = os.path.join(tmp, "t.json")
    run([gen, "tokenizer", "train", corpus, "--vocab-size", "300", "--special", "<|endoftext|>", "--out", tokjson, "--quiet"], check=True)
    fixtures = os.path.join(os.path.dirname(__file__), "..", "Tests", "GenKitTests", "Fixtures")
    hf, adapter = os.path.join(fixtures, "hf", "lmhead"), os.path.join(fixtures, "lora", "adapter")
    kinds = {
        "model": (open(model, "rb").read(), lambda p: [[gen, "info", p], [gen, "sample", "-m", p, "-n", "3", "-s", "1"]]),
        "state": (open(model + ".state", "rb").read(), None),
        "tokenizer": (open(tokjson, "rb").read(), lambda p: [[gen, "tokenize", "-m", p]]),
        # A Hugging Face folder's config.json and a PEFT adapter's adapter_config.json, each in a
        # copy of its test fixture folder.
        "hfconfig": (open(os.path.join(hf, "config.json"), "rb").read(), None),
        "adapter": (open(os.path.join(adapter, "adapter_config.json"), "rb").read(), None),
    }
    totals = {"files": 0, "runs": 0, "ok": 0, "refused": 0, "crashes": 0, "hangs": 0, "multiline": 0}
    bad = []
    for kind, (data, commands) in kinds.items():
        header_end = len(data) if kind in ("tokenizer", "hfconfig", "adapter") else 8 + int.from_bytes(data[:8], "little")
        for i in range(a.count):
            m = mutate(data, header_end, rng)
            d = os.path.join(tmp, f"{kind}-{i}")
            os.mkdir(d)
            if kind == "state":
                p = os.path.join(d, "m.safetensors")
                open(p, "wb").write(open(model, "rb").read())
                open(p + ".state", "wb").write(m)
                cmds = [[gen, "train", corpus, "--out", p, "--resume", "--steps", "3", "--quiet", "--tokenizer", "bpe"] + shape]
            elif kind == "hfconfig":
                p = os.path.join(d, "hf")
                shutil.copytree(hf, p)
                open(os.path.join(p, "config.json"), "wb").write(m)
                cmds = [[gen, "info", p], [gen, "sample", "-m", p, "-n", "3", "-s", "1"]]
            elif kind == "adapter":
                p = os.path.join(d, "adapter")
                shutil.copytree(adapter, p)
                open(os.path.join(p, "adapter_config.json"), "wb").write(m)
                cmds = [[gen, "info", p], [gen, "sample", "-m", hf, "--adapter", p, "-n", "3", "-s", "1"]]
            else:
                p = os.path.join(d, "f")
                open(p, "wb").write(m)
                cmds = commands(p)
            totals["files"] += 1
            for c in cmds:
                totals["runs"] += 1
                verdict, err = judge(c)
                totals[verdict] += 1
                if verdict in ("crashes", "hangs", "multiline"):
                    keep = os.path.join(tmp, f"bad-{len(bad)}")
                    os.rename(d, keep)
                    bad.append((verdict, " ".join(c), err[:300]))
                    break
            else:
                subprocess.run(["rm", "-rf", d])
    print(json.dumps(totals))
    for b in bad[:20]:
        print(b, file=sys.stderr)
    if bad:
        print(f"kept the failing inputs in {tmp}", file=sys.stderr)
    else:
        subprocess.run(["rm", "-rf", tmp])
    sys.exit(1 if bad else 0)

EDGES = [b"-1", b"0", b"2147483647", b"2147483648", b"4294967296", b"9223372036854775807", b"99999999999999999999",
         b"-9223372036854775808", b"1e300", b"3.5", b"null", b"[]", b"\"x\""]

def mutate(data, header_end, rng):
    m = bytearray(data)
    k = rng.randrange(5)
    if k == 0:
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(m)) if rng.random() < 0.25 else rng.randrange(max(1, min(len(m), header_end)))
            m[at] ^= 1 << rng.randrange(8)
    elif k == 1:
        m = m[:rng.randrange(len(m))]
    elif k == 2:
        spans, i, h = [], 0, m[:header_end]
        while i < len(h):
            if 0x30 <= h[i] <= 0x39 or h[i] == 0x2D:
                s = i; i += 1
                while i < len(h) and 0x30 <= h[i] <= 0x39: i += 1
                spans.append((s, i))
            else:
                i += 1
        if spans:
            s, e = rng.choice(spans)
            m[s:e] = rng.choice(EDGES)
    elif k == 3 and header_end > 8 and header_end != len(data):
        v = rng.choice([0, header_end, 2**64 - 1, len(m), rng.randrange(1 << 20)])
        m[:8] = v.to_bytes(8, "little")
    else:
        at = rng.randrange(len(m))
        m[at:at] = rng.choice([b"{\"a\":[1,2],", b"\xff\xfe", b"\"", b"}", b"\x00" * 8])
    return bytes(m)

def judge(cmd):
    try:
        r = subprocess.run(cmd, input=b"hello world\n", capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "hangs", ""
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode < 0 or r.returncode >= 128 or "crashed" in err or "Fatal error" in err:
        return "crashes", err
    if r.returncode == 0:
        return "ok", err
    if sum(1 for l in err.splitlines() if l.startswith("Error:")) != 1 or r.returncode not in (1, 64):
        return "multiline", err
    return "refused", err

def run(cmd, check=False):
    r = subprocess.run(cmd, capture_output=True)
    if check and r.returncode != 0:
        sys.exit(f"setup failed: {' '.join(cmd)}: {r.stderr.decode()}")
    return r

if __name__ == "__main__":
    main()
