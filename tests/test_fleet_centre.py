"""The centre's views of a store: status (table and --json), the static HTML report seen in a real
headless Chromium, and the harvest -> label by moving files -> train --extra-data loop."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from clca_edge.centre.store import Store
from clca_edge.cli import main
from clca_edge.fleet.messages import FrameMessage, Heartbeat, RecordBatch, Status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _jpeg(bgr) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr)
    assert ok
    return buf.tobytes()


def fill_store(folder: Path) -> Store:
    """Two devices over three hours: decisions, refusals, heartbeats, statuses, two frames."""
    store = Store(folder)
    rng = np.random.default_rng(0)
    for d, device in enumerate(("tractor-1", "drone-2")):
        records, seq = [], 0
        for hour in range(3):
            for i in range(10 + 5 * hour + 7 * d):
                conf = float(rng.uniform(0.2, 1.0))
                rec = {"type": "decision", "time": f"2026-05-0{1 + d}T0{hour}:{i:02d}:00.000Z",
                       "class": ("oak", "ash", "elm")[(i + d) % 3], "confidence": conf}
                if i % 6 == 5:
                    rec = {"type": "refused", "time": rec["time"], "reason": "blurred"}
                records.append((seq, rec))
                seq += 1
        store.add_records(RecordBatch(device, f"log{d}", tuple(records)))
        store.add_heartbeat(Heartbeat(device, "2026-05-01T03:00:00Z", 100.0, bundle="ab" * 32, bundle_version="1.2",
                                      backend="ort-cpu", precision="fp32", fps=4.5, selfcheck="passed", pending=0))
        store.set_status(Status(device, "online" if d == 0 else "offline", "2026-05-01T03:00:00Z"))
    return store


def test_status_json_lists_every_device_with_its_counts(tmp_path):
    fill_store(tmp_path / "store").close()
    res = CliRunner().invoke(main, ["fleet", "status", "--store", str(tmp_path / "store"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    by = {d["device"]: d for d in doc["devices"]}
    assert set(by) == {"tractor-1", "drone-2"}
    t = by["tractor-1"]
    # 45 records of which every 6th of each hour's run is refused: 3 + 3 + 4 = 7 refused (hours of 10, 15, 20)
    assert t["decisions"] + t["refused"] == 45 and t["refused"] == 1 + 2 + 3
    assert t["online"] is True and by["drone-2"]["online"] is False and by["drone-2"]["state"] == "offline"
    assert t["backend"] == "ort-cpu" and t["selfcheck"] == "passed" and t["last_seen"]
    assert 0 < t["low_confidence_share"] < 1 and sum(t["classes"].values()) == t["decisions"]
    table = CliRunner().invoke(main, ["fleet", "status", "--store", str(tmp_path / "store")])
    assert table.exit_code == 0 and "tractor-1" in table.output and "drone-2" in table.output


def test_status_of_a_folder_without_a_store_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["fleet", "status", "--store", str(tmp_path / "none")])
    assert res.exit_code == 11 and "holds no fleet store" in res.output and "Traceback" not in res.output


def _non_blank(img: np.ndarray) -> float:
    """Share of pixels that are not (near) white."""
    return float((img.min(axis=2) < 235).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install -y chromium (scripts/setup_env.sh)")
def test_the_html_report_opens_from_disk_in_headless_chromium_and_shows_its_plots(tmp_path):
    fill_store(tmp_path / "store").close()
    res = CliRunner().invoke(main, ["fleet", "report", "--store", str(tmp_path / "store"), "--out",
                                    str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    page = tmp_path / "report" / "index.html"
    text = page.read_text()
    assert text.count("<figure class='plot'") == 4 and "http" not in text.split("<body>")[1]   # nothing fetched
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1100",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), run.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (1100, 1200)
    # The page's layout (report.CSS): a 48 px header, then 560 x 360 plot boxes at x 16 and 592, 16 px apart.
    boxes = {"decisions": (48, 16), "rates": (48, 592), "confidence": (424, 16), "classes": (424, 592)}
    for name, (y, x) in boxes.items():
        area = img[y + 20:y + 340, x + 20:x + 540]
        assert 0.02 < _non_blank(area) < 0.9, name                  # drawn, not blank, not a black box
        assert len(np.unique(area.reshape(-1, 3) // 32, axis=0)) >= 4, name   # axes, text and coloured data
    assert _non_blank(img[800:1100, 0:1200]) > 0.005                # the device table below


def _frames_for_harvest(store: Store, leaves: Path, classes: list) -> dict:
    """Device frames from leaf images of each class; half suggested wrongly. Returns file stem -> true class."""
    truth = {}
    frame_id = 0
    for cls in classes:
        for path in sorted((leaves / "train" / cls).iterdir())[:3]:
            suggested = cls if frame_id % 2 == 0 else classes[(classes.index(cls) + 1) % len(classes)]
            msg = FrameMessage("cam-7", frame_id, "2026-05-01T01:00:00Z", "low_confidence", suggested, 0.31,
                               ((suggested, 0.31), ("x", 0.2)), {"type": "decision"}, _jpeg(cv2.imread(str(path))))
            store.add_frame(msg)
            truth[f"cam-7-{frame_id:06d}-{msg.sha256[:12]}"] = cls
            frame_id += 1
    return truth


@pytest.mark.slow
def test_harvest_label_by_moving_then_train_with_extra_data_keeps_the_held_out_split(tmp_path):
    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset

    leaves, extra_src = tmp_path / "leaves", tmp_path / "field"
    write_synthetic_dataset(leaves, SynthConfig(classes=3, per_class=8, size=64, seed=0))
    write_synthetic_dataset(extra_src, SynthConfig(classes=3, per_class=8, size=64, seed=5))
    classes = sorted(p.name for p in (leaves / "train").iterdir())
    store = Store(tmp_path / "store")
    truth = _frames_for_harvest(store, extra_src, classes)
    store.close()
    out = tmp_path / "harvest"
    res = CliRunner().invoke(main, ["fleet", "harvest", "--store", str(tmp_path / "store"), "--out", str(out),
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["added"] == 9
    unlabelled = sorted((out / "unlabelled").rglob("*.jpg"))
    assert len(unlabelled) == 9 and {p.parent.name for p in unlabelled} == set(classes)
    csv_text = (out / "frames.csv").read_text()
    assert csv_text.splitlines()[0] == "file,device,frame_id,time,reason,suggested,confidence,topk,sha256"
    assert len(csv_text.splitlines()) == 10 and "low_confidence" in csv_text
    tasks = json.loads((out / "label-studio.json").read_text())
    assert len(tasks) == 9 and tasks[0]["data"]["image"].startswith("/data/local-files/?d=unlabelled/")
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"][0] in classes
    # A person labels by moving each file into labelled/TRUE_CLASS/ (correcting the wrong suggestions).
    for path in unlabelled:
        dest = out / "labelled" / truth[path.stem] / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
    again = CliRunner().invoke(main, ["fleet", "harvest", "--store", str(tmp_path / "store"), "--out", str(out),
                                      "--json"])
    assert json.loads(again.output) == {"added": 0, "already": 9, "missing": 0, "out": str(out)}
    val_before = sorted(str(p) for p in (leaves / "val").rglob("*") if p.is_file())
    tiny = ["--model", "vit_tiny_patch16_224", "--pretrained", "none", "--method", "evit", "--keep-rate", "0.25",
            "--img-size", "64", "--model-kwargs", "depth=2,embed_dim=32,num_heads=2", "--batch-size", "8",
            "--workers", "0", "--epochs", "1"]
    counts = {}
    for name, extra in (("plain", []), ("extra", ["--extra-data", str(out / "labelled")])):
        run = CliRunner().invoke(main, ["train", "--data", str(leaves), "--out", str(tmp_path / name)] + tiny + extra)
        assert run.exit_code == 0, run.output
        found = re.search(r"(\d+) train / (\d+) val", run.output)
        assert found, run.output
        counts[name] = (int(found.group(1)), int(found.group(2)))
    assert counts["extra"][0] == counts["plain"][0] + 9        # the labelled frames joined the train split
    assert counts["extra"][1] == counts["plain"][1]            # and the held-out split is untouched
    assert sorted(str(p) for p in (leaves / "val").rglob("*") if p.is_file()) == val_before
    bad = out / "labelled" / "maple"
    bad.mkdir()
    shutil.copy(next((out / "labelled" / classes[0]).iterdir()), bad / "x.jpg")
    run = CliRunner().invoke(main, ["train", "--data", str(leaves), "--out", str(tmp_path / "bad"),
                                    "--extra-data", str(out / "labelled")] + tiny)
    assert run.exit_code != 0 and "'maple' is not a class" in run.output
