"""Run every probe case and print the defects and a count per class:
``PYTHONPATH=.:tests python tests/_probe_run.py [substring]``."""
import collections
import sys
import time
import warnings

warnings.simplefilter("ignore")
from _probe_cases import all_cases  # noqa: E402
from _probe_harness import OK, classify  # noqa: E402

sel = sys.argv[1] if len(sys.argv) > 1 else ""
counts = collections.Counter()
t0 = time.time()
for case in all_cases():
    if sel not in case.id:
        continue
    kind, detail = classify(case)
    counts[kind] += 1
    if kind not in OK:
        print(f"{kind:10s} {case.id}: {detail}", flush=True)
print(dict(counts), f"total {sum(counts.values())} in {time.time() - t0:.1f} s")
