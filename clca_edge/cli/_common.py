"""Shared pieces of the CLI: the group, error reporting, common options."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import sys
from typing import Any, Callable, Iterator, Optional, TextIO

import click

from .. import __version__
from ..core.errors import ClcaEdgeError, ExitCode

log = logging.getLogger(__name__)


def one_line(text: object) -> str:
    """A message on one line: wrapped library texts (tarfile, sqlite) are joined with spaces."""
    return " ".join(str(text).split())


# The real stdout while a --json command runs (everything else printed meanwhile goes to stderr).
_JSON_STDOUT: contextvars.ContextVar[Optional[TextIO]] = contextvars.ContextVar("json_stdout", default=None)


@contextlib.contextmanager
def _json_mode(as_json: bool) -> Iterator[None]:
    """With --json, stdout holds exactly one JSON document (``emit_json``): progress, tables, notices
    and whatever a library prints go to stderr for the duration of the command."""
    if not as_json or _JSON_STDOUT.get() is not None:
        yield
        return
    token = _JSON_STDOUT.set(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _JSON_STDOUT.reset(token)


def emit_json(obj: Any, **dumps_kwargs: Any) -> None:
    """Print the one JSON document of a --json command on the real stdout."""
    click.echo(json.dumps(obj, **dumps_kwargs), file=_JSON_STDOUT.get() or sys.stdout)


def reports_errors(fn: Callable) -> Callable:
    """Library errors become one 'Error: ...' line on stderr and the error's exit code, no traceback.
    An OSError that escaped a specific check (a disk that fails mid-run) is said the same way, with
    exit 1; ``-vv`` logs the traceback of either. A command with ``--json`` (``as_json``) prints
    its document with ``emit_json``; everything else it prints goes to stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _json_mode(bool(kwargs.get("as_json"))):
                return fn(*args, **kwargs)
        except ClcaEdgeError as e:
            log.debug("error details", exc_info=True)
            click.echo(f"Error: {one_line(e)}", err=True)
            sys.exit(e.exit_code)
        except OSError as e:
            log.debug("error details", exc_info=True)
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            click.echo(f"Error: {one_line(e.strerror or e)}{where}", err=True)
            sys.exit(ExitCode.FAILED)

    return wrapper


# Rich wraps at 80 columns when it is not writing to a terminal; a pipe or a log file then gets file
# names and table columns cut. Off a terminal (and without $COLUMNS) lines are only as wide as their text.
UNWRAPPED_WIDTH = 10_000


def console(stderr: bool = False):
    """A rich console on stdout (or stderr): the terminal's width on a terminal, unwrapped otherwise."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return Console(stderr=stderr)
    # Off a terminal $COLUMNS (when set) sizes tables only: a message or stage line is never broken
    # (soft_wrap), so a log keeps one line per message and a path stays whole for grep.
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else UNWRAPPED_WIDTH
    return Console(stderr=stderr, width=width, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clca-edge")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """CLCA token-reduced Vision Transformers for ultra-fine-grained leaf recognition on Jetson."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


class _MethodOption(click.Option):
    """--method: its help lists the registry's methods when shown (which loads them, and torch),
    so that importing the CLI (``clca-edge --help``) does not."""

    def get_help_record(self, ctx):
        from ..models.reduction import list_methods

        self.help = f"Token reduction method: {', '.join(list_methods())} (or one registered with register_reducer)."
        return super().get_help_record(ctx)


# The model options, declared once: name -> (flags, click settings). Each command takes the ones it
# uses, with its own defaults where they differ (``model_options("model", "img_size", img_size=96)``);
# ``model_config`` turns their values into a ModelConfig, and the names are the recipe keys of ``train``.
MODEL_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "model": (("--model",), dict(default="vit_base_patch16_224",
                                 help="timm ViT backbone name (vit_*, deit3_*, CLIP, DINO, MAE variants).")),
    "model_kwargs": (("--model-kwargs",), dict(
        default=None, help="timm kwargs for the backbone: 'depth=4,embed_dim=64,num_heads=2' or a JSON object.")),
    "method": (("--method",), dict(default="evit", cls=_MethodOption)),
    "keep_rate": (("--keep-rate",), dict(
        default="0.1", help="Keep rate in (0, 1]: one value, or one per location, comma separated.")),
    "locations": (("--locations",), dict(
        default=None, help="Reduction block indices, comma separated (default: depth * [3, 6, 9] / 12).")),
    "img_size": (("--img-size",), dict(default=224, type=click.IntRange(min=16))),
    "num_classes": (("--num-classes",), dict(default=200, type=click.IntRange(min=1))),
    "clca": (("--clca/--no-clca",), dict(default=True, help="CLA head + CLC cache.")),
}


def model_options(*names: str, **defaults: Any) -> Callable[[Callable], Callable]:
    """Decorator adding the model options ``names`` (all of MODEL_OPTIONS when none are given),
    in the table's order, with ``defaults`` overriding the table's defaults."""
    chosen = names or tuple(MODEL_OPTIONS)
    unknown = (set(chosen) | set(defaults)) - set(MODEL_OPTIONS)
    if unknown or not set(defaults) <= set(chosen):
        raise ValueError(f"model options {sorted(unknown or set(defaults) - set(chosen))} are not declared/chosen")

    def deco(fn: Callable) -> Callable:
        for name in reversed([n for n in MODEL_OPTIONS if n in chosen]):
            flags, settings = MODEL_OPTIONS[name]
            settings = {"show_default": True, **settings}
            if name in defaults:
                settings["default"] = defaults[name]
            fn = click.option(*flags, name, **settings)(fn)
        return fn

    return deco


def model_config(**options: Any):
    """A ModelConfig from the model options' values (raises ConfigError on bad values)."""
    from ..models.config import ModelConfig

    return ModelConfig.from_options(**options)
