#!/usr/bin/env bash
# Set up clca-edge on a Jetson Orin running JetPack 5.1.x or 6.x.
#  - checks L4T / JetPack and the system TensorRT (Python bindings from JetPack, never from PyPI:
#    a second TensorRT would not match the driver/L4T and its plans would not load);
#  - creates a venv that sees the system site-packages (tensorrt), installs clca-edge with the
#    `jetson` extra but without any tensorrt wheel, and checks that the TensorRT it sees is JetPack's.
# Usage: deploy/jetson/setup.sh [VENV_DIR]   (default: ~/clca-edge-venv). Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${1:-$HOME/clca-edge-venv}"
die() { echo "setup.sh: $*" >&2; exit 1; }

# --- L4T / JetPack -------------------------------------------------------------------------
[ -r /etc/nv_tegra_release ] || die "/etc/nv_tegra_release not found: this is not a Jetson with L4T (use pip install .[train] on a desktop)"
L4T=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' /etc/nv_tegra_release)
L4T_MAJOR=${L4T%%.*}
case "$L4T_MAJOR" in
  35) JETPACK=5; MAX_OPSET=17 ;;               # JetPack 5.1.x: TensorRT 8.5
  36) JETPACK=6; MAX_OPSET=17 ;;               # JetPack 6.0: TensorRT 8.6; 6.1/6.2: TensorRT 10.3
  *) die "L4T R$L4T is not supported (need R35 = JetPack 5 or R36 = JetPack 6)" ;;
esac
echo "L4T R$L4T -> JetPack $JETPACK"

# --- TensorRT from JetPack ------------------------------------------------------------------
TRT_DEB=$(dpkg-query -W -f='${Version}' python3-libnvinfer 2>/dev/null || true)
[ -n "$TRT_DEB" ] || die "python3-libnvinfer (TensorRT Python bindings) is not installed: sudo apt install nvidia-tensorrt (JetPack 5) or nvidia-jetpack (JetPack 6)"
TRT_VER=$(/usr/bin/python3 -c 'import tensorrt; print(tensorrt.__version__)') \
  || die "the system python3 cannot import tensorrt; reinstall python3-libnvinfer"
echo "system TensorRT $TRT_VER (deb $TRT_DEB)"
case "$JETPACK:$TRT_VER" in
  5:8.5.*|6:8.6.*|6:10.*) ;;
  *) echo "warning: TensorRT $TRT_VER is unusual for JetPack $JETPACK; continuing" >&2 ;;
esac

# --- Python ------------------------------------------------------------------------------------
PYV=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# The TensorRT bindings are built for the system python only (3.8 on JetPack 5, 3.10 on JetPack 6).
# The device runtime (predict, capture, build-engine, doctor) runs on 3.8; training needs 3.9+.
/usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' || die \
  "the system Python $PYV is older than 3.8, the oldest the clca-edge runtime supports"

# --- venv with the system TensorRT visible -------------------------------------------------------
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Constraint: never install a tensorrt wheel (pip would otherwise be free to pull one).
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "tensorrt==$TRT_VER" > "$CONSTRAINTS"
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" "$REPO[jetson]"
GOT=$("$VENV/bin/python" -c 'import tensorrt, os; print(tensorrt.__version__, os.path.dirname(tensorrt.__file__))')
case "$GOT" in
  "$TRT_VER /usr/lib/python3"*) echo "venv uses the system TensorRT: $GOT" ;;
  *) die "the venv sees a different TensorRT ($GOT); remove it: $VENV/bin/pip uninstall tensorrt" ;;
esac
"$VENV/bin/clca-edge" doctor || true
echo "done. Max ONNX opset for this JetPack: $MAX_OPSET. Next:"
echo "  $VENV/bin/clca-edge build-engine --bundle BUNDLE --precision auto --eval-data EVAL_DIR"
echo "  sudo cp $REPO/deploy/jetson/clca-edge-capture.service /etc/systemd/system/ && sudo systemctl enable --now clca-edge-capture"
