"""The capture run's extension points: observers see every frame after it is logged (an observer
that fails never ends the run), a bundle switch replaces model + classifier + guard between two
frames with no frame lost, a new frame source is one registered class, and the CLI's option
groups build the typed configs once; the display (live panel, overlay window) is an observer that
can stop the run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from clca_edge.capture import sources
from clca_edge.capture.config import CaptureConfig
from clca_edge.capture.display import DisplayObserver, LivePanel, OverlayWindow
from clca_edge.capture.fieldlog import open_log, read_log
from clca_edge.capture.bundle_runtime import BundleRuntime
from clca_edge.capture.hooks import BundleSwitch, FrameObserver
from clca_edge.capture.quality import QualityConfig
from clca_edge.capture.run import CaptureRun
from clca_edge.capture.sources import Frame, FrameSource, SourceConfig, make_source, parse_source, register_source
from clca_edge.cli import main
from clca_edge.core.preprocess import PreprocessSpec
from clca_edge.runtime.backends import Classifier, ModelFiles
from clca_edge.runtime.model import RuntimeModel
from support.runtime_bundle import BUNDLE_CLASSES as CLASSES, leaf_images, write_leaf_images

OFF = QualityConfig(enabled=False)


class Recording(Classifier):
    """Remembers the input shapes it was given; its logits favour class ``favour``."""

    def __init__(self, name: str, favour: int, n: int = len(CLASSES)):
        self.backend, self.precision, self.favour, self.n = name, "fp32", favour, n
        self.shapes: list = []
        self.closed = False

    def logits(self, chw):
        self.shapes.append(chw.shape)
        out = np.zeros(self.n, np.float32)
        out[self.favour] = 2.0
        out[(self.favour + 1) % self.n] = 1.0
        return out

    def close(self):
        self.closed = True


def runtime(img_size: int, sha: str, clf: Classifier, classes=tuple(CLASSES), label: str = "") -> BundleRuntime:
    model = RuntimeModel(ModelFiles({"fp32": "unused.onnx"}, img_size), PreprocessSpec(img_size=img_size),
                         tuple(classes), sha)
    return BundleRuntime(model, clf, None, label=label)


@pytest.fixture
def image_folder(tmp_path):
    return write_leaf_images(tmp_path / "frames", 12, seed=4)


class Seen(FrameObserver):
    def __init__(self):
        self.events: list = []

    def on_start(self, run):
        self.events.append(("start", run.runtime.sha))

    def on_decision(self, frame, record):
        self.events.append(("decision", frame.seq, frame.bgr.shape, record))

    def on_switch(self, old, new):
        self.events.append(("switch", old.sha, new.sha))

    def on_stop(self, summary):
        self.events.append(("stop", summary.frames))


class Broken(FrameObserver):
    def on_decision(self, frame, record):
        raise RuntimeError("uploader down")


def test_observers_see_each_decision_with_its_image_and_calibrated_figures(image_folder, tmp_path, caplog):
    seen = Seen()
    rt = runtime(32, "a" * 64, Recording("fake", favour=1))
    with open_log(tmp_path / "log.jsonl") as flog:
        summary = CaptureRun(rt, make_source(parse_source(str(image_folder))), flog, CaptureConfig(quality=OFF),
                             observers=[Broken(), seen]).run()
    kinds = [e[0] for e in seen.events]
    assert kinds == ["start"] + ["decision"] * 12 + ["stop"] and summary.frames == 12
    _, seq, shape, record = seen.events[1]
    assert seq == 0 and shape == (96, 128, 3)
    assert abs(float(record.probs.sum()) - 1.0) < 1e-5 and record.decision.label == "maple"
    p = np.sort(record.probs)
    assert record.margin == pytest.approx(float(p[-1] - p[-2])) and record.margin > 0
    logged = [r for r in read_log(tmp_path / "log.jsonl") if r["type"] == "decision"]
    assert {k: v for k, v in logged[0].items() if k != "time"} == json.loads(json.dumps(record.to_dict()))
    # The broken observer was said once and never ended the run.
    assert sum("Broken.on_decision failed" in r.getMessage() for r in caplog.records) == 1


class SwitchAfter(BundleSwitch, FrameObserver):
    """Switches to ``new`` once ``after`` frames were classified; keeps what it retired."""

    def __init__(self, new: BundleRuntime, after: int):
        self.new, self.after, self.count, self.retired_runtimes = new, after, 0, []

    def on_decision(self, frame, record):
        self.count += 1

    def maybe_switch(self):
        return self.new if self.count == self.after else None

    def retired(self, old):
        self.retired_runtimes.append(old)
        super().retired(old)


def test_a_bundle_switch_between_two_frames_loses_no_frame(image_folder, tmp_path):
    """The new bundle has another input size and other classes: frames read ahead under the old one
    are prepared again, every source frame is classified exactly once, the log says when it switched
    and each record names its bundle."""
    old_clf, new_clf = Recording("old", favour=0), Recording("new", favour=2, n=3)
    old = runtime(32, "a" * 64, old_clf, label="v1")
    new = runtime(48, "b" * 64, new_clf, classes=("x", "y", "z"), label="v2")
    switch = SwitchAfter(new, after=4)
    with open_log(tmp_path / "log.jsonl") as flog:
        run = CaptureRun(old, make_source(parse_source(str(image_folder))), flog,
                         CaptureConfig(quality=OFF, smooth=3), observers=[switch], switch=switch)
        summary = run.run()
    recs = list(read_log(tmp_path / "log.jsonl"))
    decisions = [r for r in recs if r["type"] == "decision"]
    assert [r["source_frame"] for r in decisions] == list(range(12))            # none lost, none twice
    assert [r["frame"] for r in decisions] == list(range(12))
    i = next(k for k, r in enumerate(recs) if r["type"] == "bundle_switch")
    sw = recs[i]
    assert sw["from_bundle_sha"] == "a" * 64 and sw["bundle_sha"] == "b" * 64 and sw["after_frames"] == 4
    assert sw["bundle"] == "v2" and sw["classes"] == 3
    before, after = [r for r in recs[:i] if r["type"] == "decision"], [r for r in recs[i:] if r["type"] == "decision"]
    assert len(before) == 4 and {(r["bundle"], r["backend"], r["class"]) for r in before} == {("v1", "old", "oak")}
    assert {(r["bundle"], r["backend"], r["class"]) for r in after} == {("v2", "new", "z")}
    assert set(old_clf.shapes) == {(3, 32, 32)} and set(new_clf.shapes) == {(3, 48, 48)}
    assert len(new_clf.shapes) == 8
    # The replaced runtime went back to the switch when replaced, the one it gave when the run ended.
    assert switch.retired_runtimes == [old, new] and old_clf.closed and new_clf.closed and run.runtime is new
    assert summary.switches == 1 and summary.bundle_sha == "b" * 64 and recs[-1]["switches"] == 1


def test_a_switch_that_fails_leaves_the_run_on_its_bundle(image_folder, tmp_path):
    class Failing(BundleSwitch):
        def maybe_switch(self):
            raise OSError("bundle download cut")

    with open_log(tmp_path / "log.jsonl") as flog:
        summary = CaptureRun(runtime(32, "a" * 64, Recording("fake", 0)), make_source(parse_source(str(image_folder))),
                             flog, CaptureConfig(quality=OFF), switch=Failing()).run()
    assert summary.frames == 12 and summary.switches == 0 and summary.bundle_sha == "a" * 64


def test_a_new_frame_source_is_one_registered_class(monkeypatch, tmp_path, bundle_dir):
    monkeypatch.setattr(sources, "_SOURCES", dict(sources._SOURCES))   # registered for this test only

    @register_source
    class Pattern(FrameSource):
        """synth://N: N generated frames."""

        kind = "synth"

        @classmethod
        def matches(cls, text):
            return text[len("synth://"):] if text.startswith("synth://") else None

        def open(self):
            self.left, self.images = int(self.cfg.uri), leaf_images(3, seed=9)

        def read(self):
            if self.left == 0:
                return None
            self.left -= 1
            n = int(self.cfg.uri) - self.left - 1
            return Frame(self.images[n % 3], n, 0.0, float(n), 0.0)

    cfg = parse_source("synth://5")
    assert cfg == SourceConfig("synth", "5") and not cfg.live and isinstance(make_source(cfg), Pattern)
    res = CliRunner().invoke(main, ["capture", "--bundle", str(bundle_dir), "--source", "synth://5", "--no-live",
                                    "--quality", "off", "--log", str(tmp_path / "log.jsonl"),
                                    "--run-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    recs = list(read_log(tmp_path / "log.jsonl"))
    assert recs[-1]["frames"] == 5 and recs[0]["source"] == "synth:5"
    with pytest.raises(ValueError, match="already registered"):
        register_source(Pattern)


def test_option_groups_build_validated_configs_once(bundle_dir, tmp_path):
    """The guard's options are one group shared by predict, capture and robustness; a bad
    combination is the usual one-line error of the config that rejects it."""
    for cmd in (["predict", "--bundle", str(bundle_dir), str(tmp_path)],
                ["capture", "--bundle", str(bundle_dir), "--source", str(tmp_path), "--no-live"],
                ["robustness", "--bundle", str(bundle_dir), "--data", str(tmp_path)]):
        res = CliRunner().invoke(main, cmd + ["--min-luminance", "0.8", "--max-luminance", "0.2"])
        assert res.exit_code == 2, (cmd, res.output)
        assert res.output.strip().splitlines()[-1] == "Error: --min-luminance 0.8 must be below --max-luminance 0.2"
    res = CliRunner().invoke(main, ["predict", "--bundle", str(bundle_dir), "--force-variant", str(tmp_path)])
    assert res.exit_code == 2 and "--force-variant needs an explicit --precision" in res.output


@pytest.mark.parametrize("window", [1, 3])
def test_smoothing_is_the_mean_of_the_last_frames_and_a_reset_starts_afresh(window):
    from clca_edge.runtime.decision import Smoother

    rng = np.random.default_rng(0)
    s, seen = Smoother([str(i) for i in range(10)], window, min_conf=0.3), []
    for i in range(200):
        if i == 120:
            s.reset()
            seen = []
        p = rng.dirichlet(np.full(10, 0.3)).astype(np.float32)
        seen = (seen + [p])[-window:]
        d = s.update(p)
        mean = np.mean(np.asarray(seen, np.float64), axis=0)
        assert d.confidence == pytest.approx(float(mean.max()), abs=1e-12)
        assert d.label == (str(int(mean.argmax())) if mean.max() >= 0.3 else "uncertain")
        assert d.raw_label == str(int(np.argmax(p)))


class QuitOnThird(OverlayWindow):
    """The overlay window as a user sees it: draws each frame, then q pressed on the third."""

    def __init__(self):
        super().__init__()
        self.shown: list = []

    def show(self, bgr, record):
        self.shown.append((bgr.shape, record["class"]))
        return len(self.shown) < 3


def test_the_display_shows_each_decision_and_q_in_its_window_stops_the_run(image_folder, tmp_path):
    out = io.StringIO()
    panel = LivePanel(Console(file=out, width=160, force_terminal=False), "capture: leaves")
    overlay = QuitOnThird()
    rt = runtime(32, "b" * 64, Recording("fake", favour=1))
    with open_log(tmp_path / "log.jsonl") as flog, panel:
        summary = CaptureRun(rt, make_source(parse_source(str(image_folder))), flog, CaptureConfig(quality=OFF),
                             observers=[DisplayObserver(panel, overlay)]).run()
    assert summary.frames == 3 and summary.stop_reason == "stop requested by the display"
    assert overlay.shown == [((96, 128, 3), "maple")] * 3
    shown = out.getvalue()   # the panel's last render: the decision, its top-k and the counts
    assert "capture: leaves" in shown and "maple (" in shown and "maple: 3" in shown and "fake (fp32)" in shown


def test_a_headless_opencv_turns_the_overlay_off_once_and_the_run_goes_on(image_folder, tmp_path, caplog):
    import cv2

    try:
        cv2.imshow("probe", np.zeros((2, 2, 3), np.uint8))
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has a GUI: the overlay window would open")
    except cv2.error:
        pass
    overlay = OverlayWindow()
    rt = runtime(32, "c" * 64, Recording("fake", favour=0))
    with open_log(tmp_path / "log.jsonl") as flog:
        summary = CaptureRun(rt, make_source(parse_source(str(image_folder))), flog, CaptureConfig(quality=OFF),
                             observers=[DisplayObserver(overlay=overlay)]).run()
    assert summary.frames == 12 and summary.stop_reason == "end of source" and not overlay.enabled
    assert sum("no display window available" in r.getMessage() for r in caplog.records) == 1
