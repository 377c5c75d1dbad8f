#!/usr/bin/env python3
"""Gives every option that takes a value, of every command that trains, samples, reviews,
evaluates, tokenizes or benchmarks, hostile values through gen's binary: negative, zero, huge (2^31 to
2^63 - 1 and beyond), not a number, infinite, empty, hexadecimal, padded.

A run passes when it exits 0; or exits 1 with exactly one "Error:" line, the last one (progress
lines may come before it); or exits 64 (a usage error) with "Error:" first. A crash, any other
status or a crash report fails it. A run still going after --timeout seconds (a value asking for
endless work, such as --steps 2^63 - 1) is killed and listed, not failed. Prints each failure
and the counts; exits 1 if any run failed.

Usage: scripts/option-sweep.py [--gen PATH] [--timeout S]
"""
import argparse, os, re, shutil, subprocess, sys, tempfile

VALUES = ["-1", "0", "-0", "+3", "1.5", "2147483648", "4294967296", "4611686018427387904",
          "9223372036854775806", "9223372036854775807", "99999999999999999999", "1e400",
          "nan", "inf", "-inf", "", "abc", "0x10", " 2", "2 "]
# Options naming files or programs: not numbers, covered by the fault tests and scripts/fuzz.py.
SKIPPED = {"--from", "--out", "--prompt-file", "--tokenizer", "--adapter", "--log", "--judge"}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "gen"))
    ap.add_argument("--timeout", type=float, default=20)
    a = ap.parse_args()
    gen = os.path.abspath(a.gen)
    tmp = tempfile.mkdtemp(prefix="gen-options-")
    os.chdir(tmp)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "kjv.txt"), encoding="utf-8") as f:
        open("c.txt", "w", encoding="utf-8").write(f.read(20000))
    shape = ["--layers", "1", "--heads", "1", "--embd", "16", "--context", "16", "--batch", "2"]
    subprocess.run([gen, "train", "c.txt", "--steps", "3", "--quiet", "--out", "m.safetensors"] + shape, check=True)
    open("pairs.jsonl", "w").write('{"prompt":"And","chosen":" God","rejected":" the"}\n')
    open("p.txt", "w").write("And\nGod\n")
    base = {
        "train": ["c.txt", "--out", "o", "--steps", "2", "--quiet"] + shape,
        "finetune": ["--from", "m.safetensors", "c.txt", "--out", "o", "--steps", "2", "--quiet"],
        "sample": ["--from", "m.safetensors", "-p", "And", "-n", "3"],
        "review": ["p.txt", "--from", "m.safetensors", "-n", "3", "--judge", "echo 1", "--out", "o"],
        "eval": ["--from", "m.safetensors", "c.txt"],
        "prefer": ["--from", "m.safetensors", "pairs.jsonl", "--out", "o", "--steps", "1", "--quiet"],
        "bench": ["--steps", "1", "--warmup", "0"] + shape,
        "tokenize": ["--from", "m.safetensors"],
        "tokenizer train": ["c.txt", "--out", "o", "--vocab-size", "300"],
    }
    runs = failed = 0
    endless = []
    for cmd, args in base.items():
        usage = subprocess.run([gen, "help"] + cmd.split(), capture_output=True, text=True).stdout
        for opt in sorted(set(re.findall(r"(--[a-z0-9-]+) <[^>]+>", usage)) - SKIPPED):
            for v in VALUES:
                argv = list(args)
                if opt in argv: argv[argv.index(opt) + 1] = v
                else: argv += [opt, v]
                for leftover in os.listdir("."):
                    if leftover.startswith("o") or leftover.startswith(".o"):
                        p = os.path.join(".", leftover)
                        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
                runs += 1
                try:
                    r = subprocess.run([gen] + cmd.split() + argv, capture_output=True, text=True, timeout=a.timeout, input="And\n")
                except subprocess.TimeoutExpired:
                    endless.append(f"{cmd} {opt} {v!r}")
                    continue
                lines = r.stderr.strip().splitlines()
                errors = [l for l in lines if l.startswith("Error:")]
                crash = "Backtracing" in r.stderr or "Fatal error" in r.stderr or "runtime failure" in r.stderr
                ok = not crash and (r.returncode == 0
                                    or (r.returncode == 1 and len(errors) == 1 and lines[-1] == errors[0])
                                    or (r.returncode == 64 and lines and lines[0].startswith("Error:")))
                if not ok:
                    failed += 1
                    print(f"FAIL {cmd} {opt} {v!r}: status {r.returncode}: {r.stderr[:400]!r}")
    for e in endless: print(f"still running after {a.timeout:g} s (killed): {e}")
    print(f"{runs} runs, {failed} failed, {len(endless)} still running after {a.timeout:g} s")
    shutil.rmtree(tmp)
    sys.exit(1 if failed else 0)

if __name__ == "__main__":
    main()
