#!/usr/bin/env python3
"""Kills a `--save-every 5` training run with SIGKILL at random moments, then resumes it.

For each trial: a fresh run of 40 steps is started and killed after a random delay. If a
checkpoint existed before the kill, it must still be usable: `--resume` must continue and end
with weights bit-identical to an uninterrupted run, or refuse with one clear line (never crash,
never continue from a mismatched pair). Prints the counts.

Usage: scripts/kill-test.py [--trials N] [--seed S] [--gen PATH]
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, time

def weights(path):
    """The tensor bytes of a safetensors file (the metadata holds dates)."""
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    return data[8 + n:]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gen", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "gen"))
    a = ap.parse_args()
    gen = os.path.abspath(a.gen)
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="gen-kill-")
    corpus = os.path.join(tmp, "c.txt")
    with open(os.path.join(os.path.dirname(__file__), "..", "data", "kjv.txt"), encoding="utf-8") as f:
        open(corpus, "w", encoding="utf-8").write(f.read(200000))
    args = ["--steps", "40", "--save-every", "5", "--seed", "5", "--threads", "2", "--quiet", "--eval-every", "10"]
    ref = os.path.join(tmp, "ref.safetensors")
    t0 = time.time()
    subprocess.run([gen, "train", corpus, "--out", ref] + args, check=True)
    duration = time.time() - t0
    counts = {"trials": 0, "killed_before_first_save": 0, "resumed_identical": 0, "refused": 0, "failures": 0}
    for trial in range(a.trials):
        out = os.path.join(tmp, f"t{trial}.safetensors")
        p = subprocess.Popen([gen, "train", corpus, "--out", out] + args, stderr=subprocess.PIPE)
        deadline = time.time() + rng.uniform(0.05, duration * 1.1)
        existed = False
        while time.time() < deadline and p.poll() is None:
            existed = existed or os.path.exists(out)
            time.sleep(0.002)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        counts["trials"] += 1
        if not os.path.exists(out):
            counts["killed_before_first_save"] += 1
            continue
        r = subprocess.run([gen, "train", corpus, "--out", out, "--resume"] + args, capture_output=True, text=True)
        errors = [l for l in r.stderr.splitlines() if l.startswith("Error:")]
        if r.returncode == 0 and weights(out) == weights(ref):
            counts["resumed_identical"] += 1
        elif r.returncode in (1, 64) and len(errors) == 1 and "already done 40 steps" in r.stderr and weights(out) == weights(ref):
            counts["resumed_identical"] += 1     # killed after the last save: nothing left to do
        elif r.returncode in (1, 64) and len(errors) == 1 and not existed and "does not exist" in r.stderr:
            counts["killed_before_first_save"] += 1
        elif r.returncode in (1, 64) and len(errors) == 1 and "crashed" not in r.stderr:
            counts["refused"] += 1
            print(f"trial {trial}: refused: {errors[0]}", file=sys.stderr)
        else:
            counts["failures"] += 1
            print(f"trial {trial}: status {r.returncode}: {r.stderr.strip()[:300]}", file=sys.stderr)
        for suffix in ("", ".state", ".state.next"):
            if os.path.exists(out + suffix): os.remove(out + suffix)
    print(json.dumps(counts))
    shutil.rmtree(tmp)
    sys.exit(1 if counts["failures"] else 0)

if __name__ == "__main__":
    main()
