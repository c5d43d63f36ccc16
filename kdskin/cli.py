"""The ``kdskin`` command line. Thin: parse, load the config, call one public function.

Errors caused by input print one line to stderr and exit 2; ``--verbose`` shows the traceback.
A reader that closes stdout early (``kdskin predict --json ... | head -5``) ends the command
quietly with status 141 (128 + SIGPIPE), as Unix tools do.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from kdskin.console import quiet_libraries
from kdskin.errors import KdskinError

COMMANDS: dict[str, str] = {
    "run": "the whole pipeline: data, teacher, every distillation stage, export, bench, explain",
    "teach": "make a teacher directory once: its models, figures and stored targets, for runs "
             "to reuse (kdskin run --teacher DIR)",
    "data": "generate, split and inspect datasets (synth | split | inspect)",
    "evaluate": "score a .keras or .tflite model on a dataset split (metrics JSON + plots)",
    "predict": "print the top classes of a model for some images",
    "export": "convert a .keras classifier to fp32, dynamic-range and int8 .tflite",
    "bench": "training and inference ms/step, sizes and size reductions for a run",
    "explain": "Grad-CAM, Score-CAM and LIME maps for images (and their faithfulness)",
    "adapt": "refit a run's operating point (calibration, melanoma offset, referral) on a "
             "clinic's own labelled images and export new files",
    "report": "write docs/RESULTS.md-style tables from run directories",
    "serve": "a local web page and JSON API: a model's prediction, referral and explanations "
             "for one image",
}


def _common(parser: argparse.ArgumentParser, config: bool = True, overrides: bool = True
            ) -> None:
    if config:
        parser.add_argument("--config", metavar="FILE", help="YAML config (default: built-in "
                            "quickstart settings, as in configs/quickstart.yaml)")
    if overrides:
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY.PATH=VALUE", help="override one config value, e.g. "
                            "--set train.batch_size=16 (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and the "
                        "libraries' logs and warnings (TensorFlow, Keras, converter)")


def _load(args: argparse.Namespace):
    from kdskin.config import load_config

    return load_config(args.config, args.overrides)


def _data_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        parser.add_argument("data", metavar="DIR", help="dataset folder")
    else:
        parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--format", choices=("ham10000", "isic2018"), default=None,
                        help="dataset layout (default: data.format from the config; "
                        "kdskin evaluate detects it)")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="a metadata row without an image file is an error")


# --------------------------------------------------------------------------- command wrappers


def _call(module: str, function: str, *args: object, **kwargs: object) -> int:
    """Import ``kdskin.commands.MODULE`` (lazily: TensorFlow loads only for commands that need
    it) and call its ``FUNCTION``; exit status 0."""
    import importlib

    getattr(importlib.import_module(f"kdskin.commands.{module}"), function)(*args, **kwargs)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    return _call("data", "synth_command", _load(args), args.out, n_images=args.n_images,
                 seed=args.seed, overwrite=args.overwrite)


def cmd_data_split(args: argparse.Namespace) -> int:
    return _call("data", "split_command", _load(args), args.data, args.out, fmt=args.format,
                 strict=args.strict, protocol=args.protocol, seed=args.seed)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    return _call("data", "inspect_command", _load(args), args.data, fmt=args.format,
                 strict=args.strict, split=args.split, verify=args.verify, json_out=args.json)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.external:
        cfg.data.external = args.external
    if args.external_format:
        cfg.data.external_format = args.external_format
    return _call("run", "run_command", cfg, data_dir=args.data_dir, out=args.out,
                 resume=args.resume, teacher=args.teacher)


def cmd_teach(args: argparse.Namespace) -> int:
    return _call("teach", "teach_command", _load(args), args.out, data_dir=args.data_dir,
                 split_file=args.split_file)


def cmd_evaluate(args: argparse.Namespace) -> int:
    return _call("evaluate", "evaluate_command", _load(args), model=args.model, data=args.data,
                 fmt=args.format, split=args.split, split_file=args.split_file,
                 json_out=args.json, plots=args.plots, strict=args.strict,
                 shifts=args.shifts, against=args.against)


def cmd_predict(args: argparse.Namespace) -> int:
    return _call("evaluate", "predict_command", args.model, args.images, top=args.top,
                 as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    if args.run:
        if args.model or args.out or args.data or args.split_file or args.config:
            raise KdskinError("kdskin export --run RUN_DIR uses the run's model, config and "
                              "data; drop --model/--out/--data/--split-file/--config (--set "
                              "still applies)")
        return _call("export", "reexport_run", args.run, args.overrides)
    return _call("export", "export_command", _load(args), model=args.model, data=args.data,
                 out=args.out, split_file=args.split_file)


def cmd_adapt(args: argparse.Namespace) -> int:
    return _call("adapt", "adapt_command", args.run, args.data, args.out, args.overrides,
                 fine_tune=args.fine_tune)


def cmd_bench(args: argparse.Namespace) -> int:
    return _call("bench", "bench_command", args.run, args.overrides, json_out=args.json,
                 update=args.update)


def cmd_explain(args: argparse.Namespace) -> int:
    return _call("explain", "explain_command", _load(args), model=args.model,
                 inputs=args.inputs, methods=args.method, out=args.out,
                 class_name=args.class_name, evaluate=args.evaluate, data=args.data,
                 split_file=args.split_file)


def cmd_report(args: argparse.Namespace) -> int:
    return _call("report", "report_command", args.runs, out=args.out,
                 results_dir=args.results_dir, explain=args.explain or [], targets=args.targets,
                 memory=args.memory or [])


def cmd_serve(args: argparse.Namespace) -> int:
    return _call("serve", "serve_command", run=args.run, model=args.model, host=args.host,
                 port=args.port, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels)


# --------------------------------------------------------------------------- parser


def _run_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin run``."""
    p.add_argument("--data-dir", metavar="DIR", help="HAM10000 (or ISIC 2018) folder; default: "
                   "generate the built-in dataset into the run directory")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/CONFIG_NAME)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN_DIR:"
                   " finished models and results are reused, an interrupted fit resumes from "
                   "its backup; a finished run says so and stops")
    p.add_argument("--external", metavar="DIR", help="an external labelled set (ISIC 2018 or "
                   "HAM10000 layout) on which every model and .tflite of the run is scored "
                   "whole at the end, never trained on (config: data.external)")
    p.add_argument("--external-format", choices=("ham10000", "isic2018"), default=None,
                   help="its layout (default: detected)")
    p.add_argument("--teacher", metavar="DIR_OR_KERAS", help="reuse a teacher instead of "
                   "training one: a teacher directory from kdskin teach (its split and stored "
                   "targets; no teacher runs while the students train) or a teacher .keras "
                   "(e.g. to repeat the students over several seeds with --set train.seed=N); "
                   "it is evaluated and checked on this run's split")


def _teach_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin teach``."""
    p.add_argument("--out", required=True, metavar="DIR", help="the teacher directory (run the "
                   "same command again to resume an interrupted build)")
    p.add_argument("--data-dir", metavar="DIR", help="HAM10000 (or ISIC 2018) folder; default: "
                   "data.dir, else the built-in dataset generated into DIR")
    p.add_argument("--split-file", metavar="CSV", help="use this split (e.g. a run's split.csv)"
                   " instead of making one from data.split/seed/protocol")


def _synth_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin data synth``."""
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n-images", type=int, default=None, help="images (default: data.synth."
                   "n_images)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: data.synth.seed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in DIR")


def _split_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin data split``."""
    _data_args(p)
    p.add_argument("--out", required=True, metavar="CSV", help="split CSV to write")
    p.add_argument("--protocol", choices=("lesion_grouped", "paper"), default=None,
                   help="lesion_grouped (default) or the LEAKY paper protocol")
    p.add_argument("--seed", type=int, default=None, help="seed (default: data.seed)")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin data inspect``."""
    _data_args(p, positional=True)
    p.add_argument("--split", metavar="CSV", help="also count per split from this split CSV")
    p.add_argument("--verify", action="store_true", help="decode every image (finds truncated "
                   "files; slower)")
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin evaluate``."""
    p.add_argument("--model", required=True, metavar="M", help=".keras or .tflite model")
    _data_args(p)
    p.add_argument("--split", default=None, choices=("train", "val", "test", "all"),
                   help="which split to score (default: test of the model's run split when "
                   "--data is the run's own data or --split-file is given; otherwise every "
                   "image: an external set is scored whole)")
    p.add_argument("--split-file", metavar="CSV", help="split CSV (default: split.csv in the "
                   "model's run directory for the run's own data; with --split on other data "
                   "and no split file, a fresh split with the config's seed)")
    p.add_argument("--json", metavar="OUT", help="write every metric as JSON here")
    p.add_argument("--plots", metavar="DIR", help="write confusion-matrix and ROC PNGs here")
    p.add_argument("--shifts", nargs="*", metavar="SHIFT", default=None,
                   help="also score the acquisition-shift suite (colour casts, vignette, frame, "
                   "zoom-out, aspect, blur, JPEG; docs/SHIFT_SUITE.md): balanced accuracy, "
                   "AUC, melanoma recall, drop from clean and out-of-scope share per shift; "
                   "without names every shift")
    p.add_argument("--against", nargs="+", metavar="M2", default=None,
                   help="also score these models on the same images and print the paired "
                   "bootstrap interval of each difference (--model minus M2): is the "
                   "difference more than resampling noise?")


def _predict_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin predict``."""
    p.add_argument("--model", required=True, metavar="M", help=".keras or .tflite model")
    p.add_argument("--top", type=int, default=3, help="classes to show per image, 1 to 7 "
                   "(default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("images", nargs="+", metavar="IMAGE")


def _export_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin export``."""
    p.add_argument("--model", metavar="M.keras", help="a kdskin .keras student")
    p.add_argument("--run", metavar="RUN_DIR", help="instead of --model/--out: re-export a "
                   "finished run's final student into RUN_DIR/tflite and update its "
                   "metrics.json and report.md")
    p.add_argument("--data", metavar="DIR", help="dataset for calibration (training split) and "
                   "the accuracy check (test split); default: the run's data")
    p.add_argument("--split-file", metavar="CSV", help="split CSV (default: the run's split.csv)")
    p.add_argument("--out", metavar="DIR", help="output folder")


def _bench_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin bench``."""
    p.add_argument("--run", metavar="RUN_DIR", required=True, help="run directory; its "
                   "config.yaml sets the batch size, warm-up and steps (--set overrides them)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    p.add_argument("--update", action="store_true", help="record the results in the run: "
                   "RUN_DIR/bench.json, metrics.json and report.md")


def _explain_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin explain``."""
    p.add_argument("--model", required=True, metavar="M", help=".keras (all methods) or .tflite "
                   "(LIME)")
    p.add_argument("--method", default="all", choices=("gradcam", "scorecam", "lime", "all"))
    p.add_argument("--class", dest="class_name", default=None, help="explain this class "
                   "(default: the predicted one)")
    p.add_argument("--evaluate", action="store_true", help="deletion/insertion faithfulness")
    p.add_argument("--data", metavar="DIR", help="with --evaluate and no images: dataset whose "
                   "test split is used")
    p.add_argument("--split-file", metavar="CSV", help="split CSV for --data")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR")


def _adapt_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin adapt``."""
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run with "
                   "decision rules; its final student, config (--set overrides it, e.g. "
                   "trust.min_melanoma_recall=0.8) and data are used, the run is not changed")
    p.add_argument("--data", required=True, metavar="DIR", help="the clinic's labelled images "
                   "(HAM10000 or ISIC 2018 layout): temperature, melanoma offset and referral "
                   "threshold are fitted on them")
    p.add_argument("--out", required=True, metavar="DIR", help="new (or empty) folder for the "
                   "files, decision.json and adapt.json")
    p.add_argument("--fine-tune", action="store_true", help="also fine-tune the student on "
                   "part of the clinic's images (HAM10000 training images rehearsed) and report "
                   "every figure on the held-out rest (settings: adapt.*, e.g. --set "
                   "adapt.epochs=4)")


def _report_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin report``."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or saved "
                   "metrics.json files)")
    p.add_argument("--out", default="docs/RESULTS.md", help="markdown file to write")
    p.add_argument("--results-dir", default=None, metavar="DIR", help="also keep each run's "
                   "small metrics.json here (e.g. docs/results)")
    p.add_argument("--explain", action="append", metavar="DIR", help="a kdskin explain "
                   "--evaluate folder (or a kept explain_NAME.json): adds its faithfulness "
                   "table (repeatable)")
    p.add_argument("--targets", default=None, metavar="FILE", help="YAML or JSON of thresholds "
                   "for the int8 file, SET.METRIC: MINIMUM (e.g. external.balanced_accuracy: "
                   "0.65): the headline says met / NOT met for each (default: figures only)")
    p.add_argument("--memory", action="append", metavar="RUN_DIR", help="a run (or saved "
                   "metrics.json) whose peak memory per stage is tabulated, outside the "
                   "experiments (repeatable)")


def _serve_args(p: argparse.ArgumentParser) -> None:
    """The options of ``kdskin serve``."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_DIR", help="a finished run: its int8 .tflite and "
                       "decision.json answer, its Keras final student gives Grad-CAM/Score-CAM")
    which.add_argument("--model", metavar="FILE", help="one .tflite or .keras file (a .tflite "
                       "outside a run: LIME only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MIB",
                   help="largest upload accepted, in MiB (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                   help="largest width x height accepted, against decompression bombs "
                   "(default 40000000)")


class Subcommand(NamedTuple):
    """One ``kdskin`` command: its name, handler, options (a function adding them), help (None:
    :data:`COMMANDS`), whether it takes ``--config`` and ``--set``, and its own subcommands."""

    name: str
    handler: Callable | None
    options: Callable[[argparse.ArgumentParser], None] | None
    helptext: str | None = None
    config: bool = True
    overrides: bool = True
    children: tuple[Subcommand, ...] = ()


#: ``kdskin data`` subcommands.
DATA_SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("synth", cmd_data_synth, _synth_args,
               "write the built-in generated dataset (HAM10000 layout)"),
    Subcommand("split", cmd_data_split, _split_args,
               "write a train/val/test split CSV (lesion-grouped, stratified)"),
    Subcommand("inspect", cmd_data_inspect, _inspect_args,
               "print counts per class and split, missing images, repeated lesions and image "
               "sizes"),
)
#: The commands, in ``kdskin --help`` order.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("run", cmd_run, _run_args),
    Subcommand("teach", cmd_teach, _teach_args),
    Subcommand("data", None, None, children=DATA_SUBCOMMANDS),
    Subcommand("evaluate", cmd_evaluate, _evaluate_args),
    Subcommand("predict", cmd_predict, _predict_args, config=False, overrides=False),
    Subcommand("export", cmd_export, _export_args),
    Subcommand("bench", cmd_bench, _bench_args, config=False),
    Subcommand("explain", cmd_explain, _explain_args),
    Subcommand("adapt", cmd_adapt, _adapt_args, config=False),
    Subcommand("report", cmd_report, _report_args, config=False, overrides=False),
    Subcommand("serve", cmd_serve, _serve_args, config=False, overrides=False),
)


def _add_subcommands(sub: Any, commands: Sequence[Subcommand]) -> None:
    """Add ``commands`` to the subparsers ``sub`` (a command with children gets its own)."""
    for c in commands:
        helptext = c.helptext or COMMANDS.get(c.name)
        p = sub.add_parser(c.name, help=helptext, description=helptext)
        if c.children:
            _add_subcommands(p.add_subparsers(dest=f"{c.name}_command", metavar="SUBCOMMAND",
                                              required=True), c.children)
            continue
        _common(p, config=c.config, overrides=c.overrides)
        p.set_defaults(func=c.handler)
        c.options(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``kdskin`` argument parser: :data:`SUBCOMMANDS` under one program."""
    parser = argparse.ArgumentParser(
        prog="kdskin",
        description="Multi-stage knowledge distillation with layer fusion for skin-lesion "
                    "classification (HAM10000), int8 TFLite deployment and explanations.",
        epilog="Run 'kdskin COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    _add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                           title="commands"), SUBCOMMANDS)
    return parser


def _version() -> str:
    from kdskin import __version__

    return f"kdskin {__version__}"


#: Exit status of a command whose stdout was closed by its reader: 128 + SIGPIPE, what a shell
#: reports for a Unix tool ended by SIGPIPE (``yes | head -1``).
EXIT_STDOUT_CLOSED = 141


def _stdout_closed() -> int:
    """stdout's reader went away: send what is still buffered (and the flush at exit) to
    /dev/null, so Python does not report a second broken pipe; :data:`EXIT_STDOUT_CLOSED`."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured)
        pass
    return EXIT_STDOUT_CLOSED


def main(argv: list[str] | None = None) -> int:
    """Run one ``kdskin`` command line; returns the exit status."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:  # also from --help and usage messages (argparse's SystemExit)
        return _stdout_closed()


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_libraries()  # before TensorFlow is imported by any command
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise  # stdout's reader went away: main ends quietly
    except KdskinError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"kdskin: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdskin: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line unless --verbose
        if args.verbose:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"kdskin: error: {exc.__class__.__name__}: {first[:300]} "
              f"(rerun with --verbose for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "COMMANDS", "EXIT_STDOUT_CLOSED"]
