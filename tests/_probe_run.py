"""Run every probe case and print the defects and a count per class:
``PYTHONPATH=.:tests python tests/_probe_run.py [substring]``."""
import collections
import sys
import time
import warnings


def main(sel: str = "") -> None:
    warnings.simplefilter("ignore")
    from _probe_cases import all_cases
    from _probe_harness import OK, classify

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


if __name__ == "__main__":  # spawned worker processes re-import this file: run only once
    main(sys.argv[1] if len(sys.argv) > 1 else "")
