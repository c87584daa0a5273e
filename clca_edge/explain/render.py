"""The explain picture: the crop the model saw, one panel per reduction location, and (CLA head)
what each depth's summary token added to the predicted class. Written for readers who never saw
the code: plain titles, a legend, dropped patches dimmed, merged patches as colour regions."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from .report import ExplainReport, ImageExplanation, LocationView

DIM = 0.4  # brightness of a dropped patch (greyscale)
TINT = 0.45  # opacity of a merge group's colour
SMALL_GROUP = (200, 200, 200)  # merged tokens beyond the palette: light grey
GOOD, BAD, NEUTRAL = "#1b7f3b", "#b3261e", "#555555"
# Distinct, colour-blind-friendlier hues (Okabe-Ito, then Paul Tol's muted set); cycled.
PALETTE = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167),
    (136, 34, 85), (68, 170, 153), (221, 204, 119), (51, 34, 136), (17, 119, 51), (204, 102, 119), (170, 68, 153),
    (136, 204, 238), (153, 153, 51),
], dtype=np.float32)


def _patch_map(values: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N,) per-patch values -> (H, W) per-pixel, each patch a block (nearest upsampling)."""
    gh, gw = grid
    h, w = size
    rows = np.minimum(np.arange(h) * gh // h, gh - 1)
    cols = np.minimum(np.arange(w) * gw // w, gw - 1)
    return values.reshape(gh, gw)[rows][:, cols]


def _dimmed(crop: np.ndarray) -> np.ndarray:
    grey = crop.astype(np.float32).mean(axis=-1, keepdims=True)
    return np.repeat(grey * DIM, 3, axis=-1)


def _boundaries(owner: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels where the patch owner changes to the right or below."""
    edge = np.zeros(owner.shape, bool)
    edge[:, :-1] |= owner[:, :-1] != owner[:, 1:]
    edge[:-1, :] |= owner[:-1, :] != owner[1:, :]
    return edge


def selection_image(crop: np.ndarray, view: LocationView, grid: tuple[int, int]) -> np.ndarray:
    """Kept patches as they are, the rest dimmed to grey."""
    n = grid[0] * grid[1]
    kept = np.zeros(n, bool)
    kept[view.kept] = True
    mask = _patch_map(kept, grid, crop.shape[:2])
    img = np.where(mask[..., None], crop.astype(np.float32), _dimmed(crop))
    img[_boundaries(mask.astype(np.int32))] = 255.0
    return img.astype(np.uint8)


def merge_image(crop: np.ndarray, view: LocationView, grid: tuple[int, int]) -> np.ndarray:
    """The largest merged tokens each in a colour of their own, smaller ones in grey, a patch still
    alone as it is, patches no token stands for dimmed; white lines between tokens. No colour is
    used twice, so two regions of one colour are one token (ToMe merges across the image)."""
    n = grid[0] * grid[1]
    owner = np.full(n, -1, np.int64)
    colour = np.full((n, 3), SMALL_GROUP, np.float32)
    alone = np.zeros(n, bool)
    order = sorted(range(len(view.groups or [])), key=lambda g: -len(view.groups[g]))
    for rank, g in enumerate(order):
        members = view.groups[g]
        owner[members] = g
        if len(members) == 1:
            alone[members] = True
        elif rank < len(PALETTE):
            colour[members] = PALETTE[rank]
    size = crop.shape[:2]
    owner_px = _patch_map(owner, grid, size)
    tint = _patch_map(np.arange(n), grid, size)
    base = crop.astype(np.float32)
    tinted = (1 - TINT) * base + TINT * colour[tint]
    img = np.where(_patch_map(alone, grid, size)[..., None], base, tinted)
    img = np.where((owner_px < 0)[..., None], _dimmed(crop), img)
    img[_boundaries(owner_px)] = 255.0
    return img.astype(np.uint8)


def _pct(x: float) -> str:
    p = 100 * x
    return f"{p:.0f}%" if p >= 1 or p == 0 else f"{p:.1f}%"


def location_text(view: LocationView, num_patches: int) -> tuple[str, str]:
    """(title, explanation) of one location panel."""
    notes = [f"Keeps {_pct(view.keep_rate)} of the tokens reaching it."]
    if view.groups is not None:
        sizes = sorted((len(g) for g in view.groups), reverse=True)
        title = f"block {view.block}: {num_patches} patches\nmerged into {len(sizes)} token{'s' if len(sizes) != 1 else ''}"
        many = sum(1 for z in sizes if z > 1) > len(PALETTE)
        notes.append(f"Each region inside white lines is one token (largest: {sizes[0]} patches)"
                     + (f"; the {len(PALETTE)} largest in colour." if many else "." ) if sizes else "No patch token left.")
    else:
        k = len(view.kept)
        title = f"block {view.block}: {_pct(k / num_patches)} of patches kept\n({k} of {num_patches})"
        dropped = num_patches - k
        if view.fused_tokens:
            notes.append(f"The {dropped} dimmed patches are not lost: they are blended into "
                         f"{view.fused_tokens} summary token{'s' if view.fused_tokens > 1 else ''}.")
        else:
            notes.append(f"The {dropped} dimmed patches are dropped from here on.")
    if view.placeholders:
        notes.append(f"{view.placeholders} repeated pick{'s' if view.placeholders > 1 else ''} left empty.")
    if view.cache_tokens:
        notes.append(f"Also kept: {view.cache_tokens} CLCA cache token{'s' if view.cache_tokens > 1 else ''} "
                     "(summaries of earlier blocks).")
    if view.recovered_after:
        plural = view.recovered_after > 1
        what = "more" if view.cache_tokens else (f"CLCA cache token{'s' if plural else ''} "
                                                 "(summaries of earlier blocks)")
        notes.append(f"Then {view.recovered_after} {what} rejoin{'' if plural else 's'}.")
    return title, " ".join(notes)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(part, width) for part in text.split("\n"))


def render_png(crop: np.ndarray, exp: ImageExplanation, report: ExplainReport, dpi: int = 100) -> bytes:
    """The picture for one image, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = exp.locations
    has_cla = exp.cla is not None
    # The bar chart gets a spacer column before it for its block labels.
    widths = [1.0] * (1 + len(views)) + ([0.32, 1.1] if has_cla else [])
    fig = plt.figure(figsize=(max(11.0, 2.75 * sum(widths)), 4.9), dpi=dpi)  # room for the titles
    gs = fig.add_gridspec(1, len(widths), width_ratios=widths, left=0.02, right=0.98, top=0.8, bottom=0.33,
                          wspace=0.1)
    merging = _image_panels(fig, gs, crop, views, report)
    if has_cla:
        _cla_panel(fig.add_subplot(gs[0, len(widths) - 1]), exp)
    _titles(fig, exp, report)
    handles = _legend_handles(bool(views), merging, has_cla)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _image_panels(fig, gs, crop: np.ndarray, views: list, report: ExplainReport) -> bool:
    """The crop, then one panel per reduction location; whether any location merged tokens."""
    grid = report.grid
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(crop, interpolation="nearest")
    ax.set_title("What the model saw", fontsize=10, fontweight="bold")
    ax.text(0.5, -0.04, _wrap(f"{crop.shape[1]}x{crop.shape[0]} px crop, cut into {grid[1]}x{grid[0]} "
                              f"patches of {report.patch_size} px", 34),
            transform=ax.transAxes, ha="center", va="top", fontsize=8, color=NEUTRAL)
    ax.axis("off")
    merging = False
    for col, view in enumerate(views, start=1):
        ax = fig.add_subplot(gs[0, col])
        merging |= view.groups is not None
        img = merge_image(crop, view, grid) if view.groups is not None else selection_image(crop, view, grid)
        ax.imshow(img, interpolation="nearest")
        title, note = location_text(view, grid[0] * grid[1])
        ax.set_title(title, fontsize=9.5, fontweight="bold")
        ax.text(0.5, -0.04, _wrap(note, 36), transform=ax.transAxes, ha="center", va="top", fontsize=7.8,
                color=NEUTRAL)
        ax.axis("off")
    return merging


def _cla_panel(ax, exp: ImageExplanation) -> None:
    """What each depth's summary token added to the predicted class (CLA head)."""
    blocks, values = exp.cla["blocks"], exp.cla["contributions"]
    labels = [f"block {b}" + (" (last)" if b == blocks[-1] else "") for b in blocks]
    y = np.arange(len(values))[::-1]
    ax.barh(y, values, color=[GOOD if v >= 0 else BAD for v in values], height=0.6)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for yy, v in zip(y, values):
        ax.text(v, yy, f" {v:+.2g} ", va="center", ha="left" if v >= 0 else "right", fontsize=7.5)
    lim = max(1e-6, max(abs(v) for v in values)) * 1.8
    ax.set_xlim(-lim, lim)
    ax.set_title(_wrap(f"Evidence for \u201c{exp.predicted}\u201d from each block's summary token", 32),
                 fontsize=9.5, fontweight="bold")
    ax.set_xlabel("score change, compared with an average leaf", fontsize=7.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _titles(fig, exp: ImageExplanation, report: ExplainReport) -> None:
    """The prediction (and whether it is right) and the model's setup, above the panels."""
    from ..models.reduction import method_label

    rates = sorted(set(report.keep_rates))
    rate_text = ", ".join(f"{r:g}" for r in report.keep_rates) if len(rates) > 1 else f"{rates[0]:g} per location"
    method = method_label(report.method)
    setup = f"{method}, keep rate {rate_text}  \u00b7  each panel: the patches still looked at after that block"
    if not exp.locations:
        setup = f"{method}: no token reduction, every patch is looked at in every block"
    verdict, colour = "", NEUTRAL
    if exp.true is not None:
        right = exp.true == exp.predicted
        verdict = f"   \u2014   true class: {exp.true} " + ("\u2713 correct" if right else "\u2717 wrong")
        colour = GOOD if right else BAD
    fig.suptitle(f"Predicted: {exp.predicted} ({exp.confidence:.0%} confident){verdict}", fontsize=12.5,
                 fontweight="bold", color=colour, y=0.985)
    fig.text(0.5, 0.905, f"{_short_path(exp.path)}  \u00b7  {setup}", ha="center", fontsize=8.5, color=NEUTRAL)


def _legend_handles(has_views: bool, merging: bool, has_cla: bool) -> list:
    from matplotlib.patches import Patch

    handles = []
    if has_views and merging:
        handles = [Patch(facecolor=PALETTE[0] / 255, edgecolor="white", label="one colour: patches merged into one token"),
                   Patch(facecolor=np.asarray(SMALL_GROUP) / 255, edgecolor="white", label="grey: smaller merged tokens"),
                   Patch(facecolor="#7fbf5f", edgecolor="white", label="uncoloured: a patch still on its own")]
    elif has_views:
        handles = [Patch(facecolor="#7fbf5f", edgecolor="white", label="bright: patch still looked at"),
                   Patch(facecolor=(DIM * 0.55,) * 3, edgecolor="white", label="dimmed: dropped (no token of its own)")]
    if has_cla:
        handles.append(Patch(facecolor=GOOD, label="green bar: pushed towards the prediction"))
        handles.append(Patch(facecolor=BAD, label="red bar: pushed away from it"))
    return handles


def _short_path(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


__all__ = ["location_text", "merge_image", "render_png", "selection_image"]
