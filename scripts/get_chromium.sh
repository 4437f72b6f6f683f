#!/usr/bin/env bash
# Make sure the browser of tests/test_browser_report.py is installed: Debian's headless-capable
# Chromium and its WebDriver (/usr/bin/chromium, /usr/bin/chromedriver). Nothing to do when both are
# on PATH; otherwise, as root on Debian (CI's clean machine), `apt-get install chromium
# chromium-driver` (about 270 MB with what they pull in; estimated 0.5 min: the mirror here gave the
# three chromium packages' 116 MB in 2.4 s, and dpkg installed the whole set in 18 s).
# Anything else is an error that says what to install. The selenium package the test drives them
# with is pinned in requirements-dev.txt (installed into the ComfyUI venv by scripts/get_comfyui.sh).
#   bash scripts/get_chromium.sh
set -euo pipefail
if [ -n "${CHROMIUM:-}" ] && [ -x "${CHROMIUM}" ] && [ -n "${CHROMEDRIVER:-}" ] && [ -x "${CHROMEDRIVER}" ]; then
  exit 0  # the test uses these two when set
fi
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
need="chromium chromium-driver"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "get_chromium.sh: chromium and/or chromedriver are not on PATH, and this is not root on a Debian" \
    "system, so they cannot be installed here; install them (Debian/Ubuntu: apt-get install $need)" \
    "or set CHROMIUM and CHROMEDRIVER to a Chromium and its matching driver" >&2
  exit 1
fi
start=$(date +%s)
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! { apt-get update -qq && apt-get install -y -qq $need; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  echo "get_chromium.sh: apt-get could not install $need (its last lines are above); the browser test" \
    "needs them: check the machine's apt sources and network, or install them by hand" >&2
  exit 1
fi
rm -f "$log"
for tool in chromium chromedriver; do
  command -v "$tool" >/dev/null || {
    echo "get_chromium.sh: apt-get installed $need but there is no $tool on PATH" >&2
    exit 1
  }
done
echo "get_chromium.sh: $(chromium --version 2>/dev/null | tail -n 1) installed in $(($(date +%s) - start)) s" >&2
