"""The ``dslbench`` command. Sub-commands import their (heavy) modules only when run."""

from __future__ import annotations

import argparse
import sys


# What each command's --help opens with: what it does, one example, its docs page (kept to one
# screen above the option list; tests/test_docs_cli_help.py checks the example and the page).
_DESCRIPTIONS = {
    "dslbench": ("Few-step evaluation and robustness benchmarks for diffusion language models, as an "
                 "lm-evaluation-harness plugin. Sub-commands import their (heavy) modules only when run; "
                 "`dslbench COMMAND --help` says more.",
                 "dslbench demo --out results/demo", "docs/index.md"),
    "make-tiny": ("Write a randomly initialised tiny checkpoint (LLaDA, Dream, DiffusionGemma or MDLM format) with a "
                  "tokenizer trained offline, or a small trained GPT-2 evaluator (--family gpt2), for tests and "
                  "first runs. The same seed gives the same bytes.",
                  "dslbench make-tiny --out tiny", "docs/quickstart.md"),
    "demo": ("The embedded default, offline on a CPU: a synthetic corpus, tiny models pre-trained and adapted "
             "three ways with equal compute, evaluated through lm-eval at NFE 4/8/16, then leaderboard.csv, "
             "plots/ and report.html in --out. Models and evaluated cells are cached there.",
             "dslbench demo --out results/demo", "docs/demo.md"),
    "regress": ("Rebuild a pinned, seeded subset of the demo, re-evaluate it and compare every metric with the "
                "committed expectations (each within a tolerance); exit non-zero on any change. --update "
                "rewrites the expectations after an intended change.",
                "dslbench regress --out results/regress", "docs/regress.md"),
    "report": ("Read lm-eval output folders (--output_path ... --log_samples) and write leaderboard.csv, the "
               "per-sample table, trade-off plots, paired comparisons and report.md / report.html.",
               "dslbench report out/ --out report/", "docs/reports.md"),
    "leaderboard": ("Evaluate a models x tasks x budgets matrix from a YAML config (finished cells are skipped, "
                    "so a rerun resumes), locally or on Ray, then write the leaderboard and the report.",
                    "dslbench leaderboard --config baselines/tiny.yaml --dry-run", "docs/reports.md"),
    "trace": ("Decode one prompt with each backend exactly as lm-eval would (same model args, seed and "
              "sampler) and show every step: tokens committed (masked diffusion / soft-mask) or the nearest "
              "tokens of the continuous state (DSL), with their confidence; an HTML page and PNG heat-maps.",
              'dslbench trace --backend mdm_llada --model-args pretrained=PATH/TO/CHECKPOINT --prompt "Summarize: ..." '
              "--nfe 8", "docs/reports.md"),
    "adapt": ("Adaptation script. Defaults follow the published recipe: 1,000 steps, AdamW lr 2e-5, 100 warm-up "
              "steps then constant, weight decay 0.1 (the released Trainer's parameter rule), grad clip 1.0, bf16 "
              "on GPUs (fp32 on CPU), output head and noise embedding frozen for dsl, prompt noised like the "
              "response, loss a token mean over the micro-batch. Run it as is on a CPU, or under `accelerate "
              "launch --config_file $(python -c 'import dslbench.training as t; "
              "print(t.config_path(\"deepspeed_zero2\"))') -m dslbench.cli adapt ...` on GPUs.",
              "dslbench adapt --base PATH/TO/CHECKPOINT --objective dsl --out dsl-ckpt", "docs/adaptation.md"),
    "eval": ("Run lm-eval with dslbench's backends and tasks registered: the same arguments as `lm_eval` "
             "(`dslbench eval --help` is lm-eval's own help).",
             "dslbench eval --model mdm_llada --model_args pretrained=tiny --tasks dsl_summ_synth_16step --limit 2",
             "docs/backends.md"),
}


def _describe(command: str) -> dict:
    """``description`` (what it does, an example, the docs page) and a formatter that keeps its lines."""
    import textwrap

    text, example, page = _DESCRIPTIONS[command]
    return {"description": textwrap.fill(text, 78, break_on_hyphens=False) + f"\n\nexample:\n  {example}\n\ndocs: {page}",
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from dslbench.errors import describe_os_error
    from dslbench.models.tiny import make_tiny

    try:
        path = make_tiny(args.out, seed=args.seed, family=args.family)
    except OSError as err:
        print(f"dslbench make-tiny: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    print(f"wrote tiny {args.family} checkpoint to {path}")
    return 0


class _ReportWarnings:
    """Collect the report's warnings (partial inputs, mostly-empty cells) and print every one
    at the end, prefixed with the command (Python's default display shows one per source line)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __enter__(self):
        import warnings

        from dslbench.report.load import ReportWarning

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always", ReportWarning)
        return self

    def __exit__(self, *exc) -> None:
        from dslbench.report.load import ReportWarning

        self._ctx.__exit__(*exc)
        for w in self.caught:
            if issubclass(w.category, ReportWarning):
                print(f"dslbench {self.command}: warning: {w.message}", file=sys.stderr)
            else:
                import warnings

                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dslbench.demo import run_demo

    overrides = {"seed": args.seed}
    if args.budgets:
        overrides["budgets"] = tuple(int(b) for b in args.budgets.split(","))
    if args.limit:
        overrides["limit"] = args.limit
    if args.no_diffusiongemma:
        overrides["diffusiongemma"] = False
    with _ReportWarnings("demo"):
        run_demo(args.out, preset=args.preset, **overrides)
    return 0


def _cmd_regress(args: argparse.Namespace) -> int:
    from dslbench.regress import EXPECTED, run_regress

    return run_regress(args.out, expected=args.expected or EXPECTED, update=args.update)


def _cmd_report(args: argparse.Namespace) -> int:
    from dslbench.report.build import build_report
    from dslbench.report.load import ReportInputError

    with _ReportWarnings("report"):
        try:
            rep = build_report(args.run_dirs, args.out, strict=args.strict, headline_nfe=args.headline_nfe,
                               samples_format=args.samples_format, n_boot=args.n_boot, seed=args.seed,
                               baselines=args.baselines)
        except ReportInputError as err:
            print(f"dslbench report: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # permission denied, disk full: one line, the old report kept
            from dslbench.errors import describe_os_error

            print(f"dslbench report: error: {describe_os_error(err)}", file=sys.stderr)
            return 2
    print(f"wrote {rep.out / 'leaderboard.csv'}, {rep.out / 'report.md'} and {rep.out / 'report.html'}")
    return 0


def run_leaderboard(config, out=None, *, report: bool = True, log=None, **kwargs):
    """``dslbench leaderboard``: evaluate the pending cells (:func:`dslbench.runs.matrix.run_matrix`,
    which takes ``force``, ``evaluate``, ``models``, ``executor`` ... among ``kwargs``), then, when
    every cell is finished, write ``OUTPUT/leaderboard.csv`` and the report from the cells' files
    (:func:`dslbench.report.build.build_report`, which takes the remaining ``kwargs``) under the
    folder lock ``OUTPUT/.report.lock``: drivers sharing the folder each write it in turn once
    every cell is finished (the runner waits for the cells other drivers hold)."""
    import inspect

    from dslbench.runs.matrix import run_matrix

    log = log or (lambda s: print(s, file=sys.stderr))
    accepted = inspect.signature(run_matrix).parameters
    result = run_matrix(config, out, log=log, **{k: v for k, v in kwargs.items() if k in accepted})
    if kwargs.get("dry_run") or result.failed or not report:
        return result
    from dslbench.report.build import build_report

    config = result.config
    options = {"headline_nfe": config.headline_nfe, "title": f"dslbench leaderboard: {config.name}",
               "note": (f"Regenerated by `dslbench leaderboard --config {config.path}`" if config.path else "")
               + f" (limit {config.limit}, seed {config.seed}).",
               **{k: v for k, v in kwargs.items() if k not in accepted}}
    from dslbench.runs.claims import FolderLock

    # drivers sharing the folder write one after another; each sees every cell finished
    with FolderLock(config.output / ".report.lock"):
        result.report = build_report([c.dir for c in result.cells], config.output, **options)
    result.leaderboard = result.report.files["leaderboard"]
    log(f"wrote {result.leaderboard} and {config.output / 'report.html'}")
    return result


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from dslbench.data.jsonl import DataFormatError
    from dslbench.errors import describe_os_error
    from dslbench.harness.run import CellSaveError
    from dslbench.models.loading import CheckpointFormatError
    from dslbench.report.load import ReportInputError
    from dslbench.runs.config import MatrixConfigError

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    with _ReportWarnings("leaderboard"):
        try:
            result = run_leaderboard(args.config, out=args.out, force=args.force, models=models, report=not args.no_report,
                                     executor=args.executor, address=args.address, max_retries=args.max_retries,
                                     retry_errors=args.retry_errors, dry_run=args.dry_run)
        except (MatrixConfigError, ReportInputError, CellSaveError, CheckpointFormatError, DataFormatError) as err:
            print(f"dslbench leaderboard: error: {_one_line(err)}", file=sys.stderr)
            return 2
        except OSError as err:  # permission denied, disk full: finished cells stay, the failed one pending
            print(f"dslbench leaderboard: error: {describe_os_error(err)}", file=sys.stderr)
            return 2
    if args.dry_run:
        return 0
    failed = f", {len(result.failed)} failed (see the logs above)" if result.failed else ""
    print(f"{len(result.ran)} cell(s) evaluated, {len(result.skipped)} already finished{failed}")
    return 1 if result.failed else 0


def _one_line(err: BaseException) -> str:
    """An error's message on one line (a config error may quote a multi-line value)."""
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


def _cmd_trace(args: argparse.Namespace) -> int:
    """``dslbench trace``: bad arguments, checkpoints or sampler options exit with 2."""
    from dslbench.models.loading import CheckpointFetchError
    from dslbench.report.trace import render_trace
    from dslbench.runs.trace import TraceArgumentError, check_request, record_trace

    backends = [b.strip() for value in args.backend or [] for b in value.split(",") if b.strip()]
    try:
        pairs = check_request(backends, args.model_args or [], args.nfe, args.gen_length, args.prompt)
        traces, trace_json = record_trace(pairs, args.prompt, nfe=args.nfe, gen_length=args.gen_length, chat=args.chat,
                                          out_dir=args.out)
        _, paths = render_trace(trace_json)  # the page is drawn from the recorded file, as any reader would
    except (TraceArgumentError, ValueError, FileNotFoundError, CheckpointFetchError) as err:
        print(f"dslbench trace: error: {err}", file=sys.stderr)
        return 2
    for trace in traces:
        print(f"[{trace.backend}] NFE {trace.nfe} (budget {trace.nfe_budget}), {trace.steps} steps, {len(trace.rows)} rows")
        print(f"[{trace.backend}] text: {trace.text!r}")
    pngs = ", ".join(str(v) for k, v in paths.items() if k.startswith("png"))
    print(f"wrote {paths['html']}, {paths['json']} and {pngs}")
    return 0


def _cmd_eval(args: argparse.Namespace, rest: list[str]) -> int:
    """Explicit equivalent of ``lm_eval ...`` with dslbench's backends and tasks registered."""
    import dslbench._lm_eval_hook  # noqa: F401  (installs the hook even without the .pth file)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *rest]
    cli_evaluate()
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    """``dslbench adapt``: errors in the arguments, the data or the output directory exit with 2."""
    from dslbench.errors import describe_os_error
    from dslbench.models.loading import CheckpointFetchError
    from dslbench.training.data import DataSpecError
    from dslbench.training.loop import AdaptConfig, AdaptError, run_adapt
    from dslbench.training.objectives import ObjectiveError

    fields = set(AdaptConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    options = {k: v for k, v in vars(args).items() if k not in fields and k not in ("func", "command", "verbose")}
    cfg = AdaptConfig(**values, objective_options=options)
    try:
        result = run_adapt(cfg)
    except (ValueError, DataSpecError, ObjectiveError, AdaptError, CheckpointFetchError) as err:
        print(f"dslbench adapt: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permission denied, disk full, a missing path: one line, no traceback
        print(f"dslbench adapt: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    if result.already_done:
        return 0
    tps = f", {result.tokens_per_s:.0f} tokens/s" if result.tokens_per_s else ""
    loss = f", final loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    print(f"wrote {cfg.objective} checkpoint to {result.out} ({result.steps} steps{loss}{tps})")
    return 0


def _add_adapt_parser(sub, objective_args: bool) -> None:
    """The ``adapt`` sub-parser. Each objective's own options (``Objective.add_arguments``) are
    added only when ``adapt`` is the command being run, so other commands never import torch."""
    p = sub.add_parser(
        "adapt",
        help="adapt a base checkpoint (DSL, the masked-diffusion control, ...) into an evaluable checkpoint",
        usage="dslbench adapt --base BASE --out OUT [--objective NAME] [options; the list below]",
        **_describe("adapt"),
    )
    p.add_argument("--base", required=True, help="base checkpoint directory or hub id")
    p.add_argument("--objective", default="dsl", help="dsl, mdm, softmask, uniform (DiffusionGemma-format models) or another registered objective (default dsl); each objective's own options are listed below")
    p.add_argument("--data", default="synth", help="synth, synth:N, PATH.jsonl, PATH.txt or hf:NAME[:CONFIG[:SPLIT]]")
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--out", required=True, help="output directory (the final checkpoint and resume states)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest resume state")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default 2e-5)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps, then constant (default 100)")
    p.add_argument("--weight-decay", type=float, default=0.1,
                   help="AdamW weight decay on the parameters --weight-decay-params names (default 0.1)")
    p.add_argument("--weight-decay-params", default="auto",
                   help="which parameters decay: released (the released HF Trainer's rule: all but biases and "
                   "norms, scalars included), matrices (tensors of 2+ dimensions only), none; auto (default): "
                   "released for dsl, matrices for mdm, none for softmask (the soft-masking release decays nothing)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip, 0 disables (default 1.0)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch per process (default 8)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--seq-len", type=int, default=4096, help="max tokens per row / packing block size (default 4096)")
    p.add_argument("--response-len", type=int, default=None,
                   help="cut or EOS-fill every response to this many tokens (default: the batch's longest)")
    p.add_argument("--prompt-format", default="plain", help="plain (as lm_eval sends prompts) or chat (--apply_chat_template)")
    p.add_argument("--instruction", default=None, help="instruction line for summarization records without one")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of the data order and synth corpus (default: --seed)")
    p.add_argument("--save-every", type=int, default=100, help="write a resume state every N steps (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="resume states kept (default 2)")
    p.add_argument("--precision", default="auto", help="auto (bf16 where supported, else fp32), fp32, bf16, fp16")
    p.add_argument("--save-dtype", default="auto", help="dtype of the final weights: auto (bf16 if trained in bf16), float32, bfloat16")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (single process; accelerate launch decides otherwise)")
    p.add_argument("--log-every", type=int, default=1, help="log a line to adapt_log.jsonl every N steps")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--freeze-head", default="auto", help="auto (frozen for dsl, trained for mdm and softmask), yes, no")
    if not objective_args:
        p.set_defaults(func=_cmd_adapt)
        return
    from dslbench.training.objectives import OBJECTIVES, objective_class

    for name in sorted(OBJECTIVES):
        try:
            objective_class(name).add_arguments(p)
        except ImportError:  # an objective whose module is missing: it errors when selected
            continue
    p.set_defaults(func=_cmd_adapt)


def build_parser(objective_args: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dslbench", **_describe("dslbench"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-tiny", help="write a randomly initialised tiny checkpoint with its tokenizer",
                       **_describe("make-tiny"))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="llada", choices=["llada", "dream", "diffusiongemma", "mdlm", "gpt2"],
                   help="checkpoint format (gpt2: a small trained GPT-2 evaluator for GenPPL / MAUVE)")
    p.set_defaults(func=_cmd_make_tiny)

    p = sub.add_parser("demo", help="the embedded default: tiny models, synthetic data, leaderboard and report",
                       **_describe("demo"))
    p.add_argument("--out", default="results/demo", help="output directory (models are cached here)")
    p.add_argument("--preset", default="demo", choices=["demo", "regress", "smoke"],
                   help="demo: the full embedded default; regress: its pinned subset; smoke: seconds, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budgets", default=None, help="comma-separated NFE budgets (default: the preset's)")
    p.add_argument("--limit", type=int, default=None, help="documents per task (default: the preset's)")
    p.add_argument("--no-diffusiongemma", action="store_true",
                   help="leave out the from-scratch DiffusionGemma row (on in every preset: trained with equal compute, "
                        "its CPU steps take 2-3x a LLaDA step's time, about 45%% of the demo's model building)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("regress", help="re-run a pinned small configuration and compare with committed expectations",
                       **_describe("regress"))
    p.add_argument("--out", default="results/regress", help="work directory (models are cached here)")
    p.add_argument("--expected", default=None, help="expectations JSON (default: baselines/regression/expected.json)")
    p.add_argument("--update", action="store_true", help="rewrite the expectations after an intended change")
    p.set_defaults(func=_cmd_regress)

    p = sub.add_parser("report", help="lm-eval output directories -> leaderboard.csv, samples, plots, report.md/html",
                       **_describe("report"))
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="lm-eval --output_path folders (searched recursively)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strict", action="store_true", help="treat partial inputs (missing samples, unreadable runs) as errors")
    p.add_argument("--headline-nfe", type=int, default=16, help="NFE budget of the headline table")
    p.add_argument("--samples-format", default="parquet", choices=["parquet", "csv"])
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the paired comparisons")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--baselines", default=None, help="folder of published_*.csv (default: the shipped baselines/)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("leaderboard", help="run a models x tasks x budgets matrix (resumable), then the report",
                       **_describe("leaderboard"))
    p.add_argument("--config", required=True, help="YAML matrix config, e.g. baselines/tiny.yaml")
    p.add_argument("--out", default=None, help="output directory (default: the config's output)")
    p.add_argument("--force", action="store_true", help="re-evaluate finished cells")
    p.add_argument("--models", default=None, help="comma-separated model names to run (default: all)")
    p.add_argument("--no-report", action="store_true", help="evaluate only")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: cells one after another in this process; ray: one Ray task per cell across the "
                   "cluster's GPUs and nodes (pip install 'dslbench[ray]'; the output folder must be shared storage)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. auto, or HOST:6379); default: RAY_ADDRESS, else a local Ray instance")
    p.add_argument("--max-retries", type=int, default=2,
                   help="ray: times a cell whose worker died (killed, out of memory, node lost) is retried before "
                   "it is reported as failed (default 2)")
    p.add_argument("--retry-errors", action="store_true",
                   help="ray: retry a cell after a Python error too (off: such errors usually repeat)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the pending cells with their documents, budgets and forward passes; run nothing")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser(
        "trace",
        help="how one output evolves step by step per backend: HTML page + PNG heat-maps",
        **_describe("trace"),
    )
    p.add_argument("--backend", "--compare", dest="backend", action="append", metavar="NAME",
                   help="mdm_llada, softmask_llada or dsl_llada; repeat it (or give a comma-separated list) to "
                   "compare backends side by side")
    p.add_argument("--model-args", dest="model_args", action="append", metavar="pretrained=DIR[,k=v...]",
                   help="model args of each --backend, in the same order (given once: shared by all)")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--nfe", type=int, required=True, help="denoiser-call budget")
    p.add_argument("--gen-length", type=int, default=None, help="generated tokens (default: the model args' or the backend's)")
    p.add_argument("--out", default="results/trace", help="output directory (trace.html, trace_*.png, trace.json)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template (one user turn)")
    p.set_defaults(func=_cmd_trace)

    _add_adapt_parser(sub, objective_args)

    p = sub.add_parser(
        "eval",
        help="run lm-eval with dslbench registered (same arguments as lm_eval)",
        add_help=False,
        **_describe("eval"),
    )
    p.set_defaults(func=_cmd_eval, passthrough=True)
    for name, command in sub.choices.items():
        if name != "eval":  # eval is lm-eval's own console
            command.add_argument("--verbose", action="store_true",
                                 help="print every third-party log line, warning and progress bar as the libraries make them")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(objective_args=bool(argv) and argv[0] == "adapt")
    if argv and argv[0] == "eval":
        args = argparse.Namespace(command="eval")
        return _cmd_eval(args, argv[1:])
    args = parser.parse_args(argv)
    from dslbench.console import console

    with console(args.verbose):  # quiet (lm-eval's notices included) unless --verbose
        return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
