"""Command-line interface: ``wideNN run CONFIG.yaml`` and ``wideNN list``.

Exit status: 0 on success; 2 for a bad config, override, device or output folder (one
message naming the key or path, before the output folder is created or changed); 1 when the
experiment itself raises (traceback shown); 3 when the run measured nothing (every row
skipped, e.g. missing data); 130 on Ctrl-C (rerunning the same command resumes).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wideNN",
        description="Run wideNN experiments: finite-width networks next to their NNGP/NTK limits.",
    )
    from wideNN._version import __version__

    p.add_argument("--version", action="version", version=f"wideNN {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run an experiment from a config YAML (resumes into an existing --out)")
    r.add_argument("config", metavar="CONFIG", nargs="?",
                   help="config YAML: a path, or the name of a built-in config (quickstart = configs/quickstart.yaml)")
    r.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/<config stem>)")
    r.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override config keys; VALUE is YAML, dotted keys reach nested dicts (repeatable)")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    r.add_argument("--fresh", action="store_true",
                   help="discard results already in --out instead of resuming (needed when the config changed)")
    r.add_argument("--experiments-dir", metavar="DIR", default=None,
                   help="folder of experiment modules (default: $WIDENN_EXPERIMENTS_DIR, else the built-in "
                        "experiments); a config may also name a script: experiment: path/to/script.py")
    r.add_argument("--quiet", action="store_true", help="print nothing but errors")

    ls = sub.add_parser("list", help="list experiments and the configs that use them")
    ls.add_argument("--experiments-dir", metavar="DIR", default=None)
    ls.add_argument("--configs-dir", metavar="DIR", default=None,
                    help="folder of configs (default: $WIDENN_CONFIGS_DIR, else the built-in configs)")
    return p


def _list(args: argparse.Namespace) -> int:
    from . import discovery as ex

    names = ex.available_experiments(args.experiments_dir)
    by_exp = ex.configs_by_experiment(args.configs_dir)
    cwd = os.getcwd()

    def show(path) -> str:
        rel = os.path.relpath(path, cwd)
        return rel if not rel.startswith("..") else str(path)

    if not names:
        print(f"no experiments in {ex.experiments_dir(args.experiments_dir)}")
    for name in names:
        summary = ex.experiment_summary(name, args.experiments_dir)
        print(f"{name}" + (f"  -- {summary}" if summary else ""))
        configs = by_exp.get(name, [])
        for c in configs:
            print(f"    {show(c)}")
        if not configs:
            print("    (no configs)")
    orphans = {k: v for k, v in by_exp.items() if k not in names}
    for name, configs in sorted(orphans.items()):
        for c in configs:
            print(f"warning: {show(c)} uses unknown experiment {name!r}", file=sys.stderr)
    return 0


def _config_after_set(args: argparse.Namespace) -> None:
    """``--set a=1 b=2 CONFIG``: the greedy ``--set`` took CONFIG; give it back."""
    from .config import ConfigError

    if args.config is not None:
        return
    plain = [o for o in args.overrides if "=" not in o]
    if len(plain) != 1 or args.overrides[-1] != plain[0]:
        raise ConfigError("wideNN run: give one CONFIG (a YAML path or a built-in config name), "
                          "e.g. wideNN run configs/quickstart.yaml --set key=value")
    args.config = args.overrides.pop()


def _run(args: argparse.Namespace) -> int:
    from .runner import run_experiment

    _config_after_set(args)

    run_experiment(
        args.config,
        out_dir=args.out,
        overrides=args.overrides,
        device=args.device,
        fresh=args.fresh,
        experiments_dir=args.experiments_dir,
        quiet=args.quiet,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wideNN`` console script; returns the exit status."""
    from .config import ConfigError
    from .runner import RunIncomplete, RunInterrupted

    args = _parser().parse_args(argv)
    try:
        return {"run": _run, "list": _list}[args.command](args)
    except ConfigError as e:
        print(f"wideNN: error: {e}", file=sys.stderr)
        return 2
    except RunIncomplete as e:
        print(f"wideNN: {e}", file=sys.stderr)
        return 3
    except (RunInterrupted, KeyboardInterrupt) as e:
        # one line, no traceback: the results so far are on disk and the same command resumes
        msg = str(e) if isinstance(e, RunInterrupted) else "interrupted; rerun the same command to resume"
        print(f"wideNN: {msg}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`wideNN list | head`): stop quietly, as other CLI tools do;
        # stdout is pointed at devnull so the interpreter's final flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
