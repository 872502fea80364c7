#!/usr/bin/env bash
# Regenerates the test assets in this directory (run from anywhere; needs network access to PyPI,
# espeak-ng and sox: apt-get install -y espeak-ng sox). The committed files are its output.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Two short utterances, different voices and wording: 16 kHz mono 16-bit PCM, edge silence trimmed.
speak() {  # out voice pitch text
  espeak-ng -v "$2" -p "$3" -s 165 -w "$tmp/raw.wav" "$4"
  sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$tmp/out.wav" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
  mv "$tmp/out.wav" "$here/$1"
}
speak speech_happy.wav en-us 50 "I am so happy to see you again today!"
speak speech_angry.wav en-gb+f3 70 "Why would you ever do that to me?"

# astronaut.png (Eileen Collins, NASA, public domain) from the scikit-image wheel, 320 px JPEG, into
# runtime/demo/ (the demo video's face; the runtime reads nothing under tests/).
"$python" -m pip download --quiet --no-deps --only-binary=:all: scikit-image -d "$tmp/wheel"
unzip -q -o "$tmp"/wheel/scikit_image-*.whl skimage/data/astronaut.png -d "$tmp"
"$python" - "$tmp/skimage/data/astronaut.png" "$here/../../runtime/demo/astronaut_320.jpg" <<'PY'
import sys, cv2
img = cv2.imread(sys.argv[1])
img = cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)
ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
assert ok
open(sys.argv[2], "wb").write(buf.tobytes())
PY
ls -l "$here"
