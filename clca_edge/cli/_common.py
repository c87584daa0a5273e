"""Shared pieces of the CLI: the group, error reporting, common options."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable, Optional

import click

from .. import __version__
from ..core.errors import ClcaEdgeError, ExitCode

log = logging.getLogger(__name__)


def one_line(text: object) -> str:
    """A message on one line: wrapped library texts (tarfile, sqlite) are joined with spaces."""
    return " ".join(str(text).split())


def reports_errors(fn: Callable) -> Callable:
    """Library errors become one 'Error: ...' line on stderr and the error's exit code, no traceback.
    An OSError that escaped a specific check (a disk that fails mid-run) is said the same way, with
    exit 1; ``-vv`` logs the traceback of either."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
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
    if (isatty is not None and isatty()) or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clca-edge")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """CLCA token-reduced Vision Transformers for ultra-fine-grained leaf recognition on Jetson."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def model_options(fn: Callable) -> Callable:
    """--model/--method/--keep-rate/--locations/--img-size/--num-classes/--clca."""
    opts = [
        click.option("--model", "backbone", default="vit_base_patch16_224", show_default=True,
                     help="timm ViT name (vit_*, deit3_*, CLIP, DINO, MAE variants)."),
        click.option("--method", default="evit", show_default=True, help="Token reduction method."),
        click.option("--keep-rate", default="0.1", show_default=True,
                     help="Keep rate in (0, 1]: one value, or one per location separated by commas."),
        click.option("--locations", default=None,
                     help="Reduction block indices, comma separated (default: depth * [3,6,9]/12)."),
        click.option("--img-size", default=224, show_default=True, type=click.IntRange(min=1)),
        click.option("--num-classes", default=200, show_default=True, type=click.IntRange(min=1)),
        click.option("--clca/--no-clca", default=True, show_default=True, help="CLA head + CLC cache."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def parse_locations(text) -> Optional[tuple[int, ...]]:
    """--locations '3,6,9' -> (3, 6, 9); empty/None -> None (the model's default placement)."""
    from ..core.errors import ConfigError

    if text is None or str(text).strip() == "":
        return None
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--locations {text!r} must be comma-separated block indices") from None


def model_config(backbone, method, keep_rate, locations, img_size, num_classes, clca, **extra):
    """Build a ModelConfig from the common options (raises ConfigError on bad values)."""
    from ..models.config import ClcaConfig, ModelConfig, parse_keep_rates

    return ModelConfig(
        backbone=backbone, method=method, keep_rate=parse_keep_rates(keep_rate), locations=parse_locations(locations),
        clca=ClcaConfig() if clca else ClcaConfig.off(), num_classes=num_classes, img_size=img_size, **extra,
    )
