import subprocess, time, sys
_orig = subprocess.run
def run(*a, **k):
    t = time.monotonic(); r = _orig(*a, **k)
    argv = a[0] if a else k.get("args")
    open("/tmp/prof/timing.log","a").write(f"[{time.monotonic()-t:5.1f}s] {str(argv)[:120]}\n")
    return r
subprocess.run = run
