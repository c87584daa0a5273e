"""doctor on a fake Jetson and on this machine: findings, hints, exit codes — never a crash."""

import json

from click.testing import CliRunner

from clca_edge.cli import main
from clca_edge.doctor import FAIL, OK, WARN, System, check_disk, check_jetson, check_power, check_swap, \
    check_tensorrt, check_cameras, run_checks


def fake_jetson(tmp_path, release="# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref"):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(release)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/video0").write_text("")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 7000000 kB\nSwapTotal:  3500000 kB\n")
    outputs = {"nvpmodel": "NV Power Mode: 15W\n2\n"}
    return System(root=str(tmp_path), run=lambda cmd: outputs.get(cmd[0]),
                  packages={"tensorrt": "8.5.2.2", "onnxruntime": "1.16.0"})


def test_fake_jetson_findings(tmp_path):
    system = fake_jetson(tmp_path)
    jp = check_jetson(system)[0]
    assert jp.status == OK and "L4T 35.4.1 -> JetPack 5.1.2" in jp.value and "opset <= 17" in jp.value
    assert check_tensorrt(system)[0].value == "8.5.2.2"
    assert check_cameras(system)[0].value == "/dev/video0"
    power = check_power(system)[0]
    assert power.status == WARN and "nvpmodel -m 0" in power.hint
    assert check_swap(system)[0].value == "3417 MB"


def test_old_jetpack_and_missing_pieces_are_findings(tmp_path):
    system = fake_jetson(tmp_path, "# R32 (release), REVISION: 7.1")
    assert check_jetson(system)[0].status == WARN
    bare = System(root=str(tmp_path / "nothing"), run=lambda cmd: None, packages={})
    assert check_tensorrt(bare)[0].status == WARN
    assert check_cameras(bare)[0].status == WARN
    assert check_jetson(bare)[0].value.startswith("not a Jetson")


def test_disk_path_not_created_yet_is_measured_on_its_disk(tmp_path):
    f = check_disk(System(), str(tmp_path / "runs" / "capture"))[0]
    assert f.status == OK and f.value.endswith(f"at {tmp_path / 'runs' / 'capture'}")


def test_full_disk_blocks_capture(tmp_path):
    class Full(System):
        def disk_free_mb(self, path):
            return 12.0

    f = check_disk(Full(), "/data")[0]
    assert f.status == FAIL and f.blocks_capture and "free space" in f.hint


def test_doctor_runs_here_and_reports_missing_gpu_pieces_as_findings():
    res = CliRunner().invoke(main, ["doctor", "--json"])
    findings = json.loads(res.stdout)
    by_check = {f["check"]: f for f in findings}
    assert {"python", "TensorRT", "ONNX Runtime", "OpenCV", "cameras", "free disk", "swap"} <= set(by_check)
    blocking = [f for f in findings if f["blocks_capture"]]
    assert res.exit_code == (1 if blocking else 0)
    assert by_check["ONNX Runtime"]["status"] == OK
    assert all(f["status"] in ("ok", "info", "warn", "fail") for f in findings)
    assert len(run_checks()) == len(findings)


def test_doctor_names_the_device_cache_folder_and_warns_when_it_cannot_be_written(tmp_path):
    from clca_edge.doctor import check_cache_dir

    res = CliRunner().invoke(main, ["doctor", "--json", "--cache-dir", str(tmp_path / "cache")])
    by_check = {f["check"]: f for f in json.loads(res.stdout)}
    assert by_check["device cache"]["status"] == OK and by_check["device cache"]["value"] == str(tmp_path / "cache")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    f = check_cache_dir(str(blocker / "cache"))[0]
    assert f.status == WARN and "--cache-dir" in f.hint and not f.blocks_capture
