"""Monitoring what was served: the serving-skew monitor (served = trained, checked on logged vectors)."""
