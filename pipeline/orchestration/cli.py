"""``deunet flow run|retrain|serve``: the Prefect flows from the command line.

``run`` and ``retrain`` need no server (Prefect starts a temporary one for the run); ``serve`` registers
the scheduled retraining deployment on a running Prefect server and executes its runs until stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PipelineError

SERVER_HELP = (
    "start a server with `prefect server start` (UI and API on http://127.0.0.1:4200) and point this "
    "shell at it: export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


class ServerRequired(PipelineError):
    """A command that needs a running Prefect server found none configured."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", default=".", help="root of the DVC project (default: .)")
    common.add_argument("--params", default="params.yaml",
                        help="params file with the orchestrate section, relative to --repo (default: params.yaml)")  # fmt: skip
    p = argparse.ArgumentParser(prog="deunet flow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,retrain,serve}")
    run = sub.add_parser("run", parents=[common], help="run the pipeline once (all stages, or --stage ...)")
    run.add_argument("--stage", action="append", dest="stages", metavar="NAME",
                     help="run only this dvc.yaml stage (repeatable; default: all)")  # fmt: skip
    run.add_argument("--force", action="append", metavar="NAME",
                     help="re-run this stage even if DVC finds it up to date (repeatable)")  # fmt: skip
    sub.add_parser("retrain", parents=[common], help="retrain once: force download, then the rest")
    sub.add_parser("serve", parents=[common],
                   help="serve the scheduled retraining deployment (needs PREFECT_API_URL)")  # fmt: skip
    return p


def _report(results: Sequence[object]) -> None:
    from pipeline.orchestration.flows import StageResult

    for r in results:
        assert isinstance(r, StageResult)
        state = "ran" if r.ran else "restored" if r.restored else "up to date"
        print(f"{r.stage:<12} {state:<10} {r.seconds:7.1f} s")


def _run(args: argparse.Namespace) -> int:
    from pipeline.orchestration.flows import load_config, pipeline_flow, select_stages, stage_names

    # Check names and params here, before Prefect starts a server for the run.
    select_stages(stage_names(args.repo), args.stages, args.force)
    load_config(args.repo, args.params)
    _report(pipeline_flow(repo=args.repo, stages=args.stages, force=args.force, params=args.params))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from pipeline.orchestration.flows import load_config, retrain_flow, retrain_stages

    retrain_stages(args.repo)
    load_config(args.repo, args.params)
    _report(retrain_flow(repo=args.repo, params=args.params))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    from pipeline.orchestration.flows import load_config, retrain_deployment, retrain_stages

    # A temporary server would vanish with this process, and the schedule with it.
    if not PREFECT_API_URL.value():
        raise ServerRequired(
            f"PREFECT_API_URL is not set: `deunet flow serve` needs a running Prefect server; {SERVER_HELP}"
        )
    retrain_stages(args.repo)
    cfg = load_config(args.repo, args.params)
    print(f"serving deployment {cfg.deployment!r}: cron {cfg.cron!r} ({cfg.timezone}), one run at a time")
    serve(retrain_deployment(Path(args.repo), cfg, args.params), limit=1)
    return 0


COMMANDS = {"run": _run, "retrain": _retrain, "serve": _serve}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
