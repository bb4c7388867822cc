import subprocess, time, sys
_orig = subprocess.run
def run(*a, **k):
    t = time.monotonic(); r = _orig(*a, **k)
    argv = a[0] if a else k.get("args")
    print(f"[{time.monotonic()-t:5.1f}s] {' '.join(map(str, argv))[:140]}", file=sys.__stderr__, flush=True)
    return r
subprocess.run = run
