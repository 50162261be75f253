#!/usr/bin/env bash
# Install Debian's headless Chromium for the browser tests when it is not on the machine, and a font
# with Chinese glyphs (the pages are in Chinese by default; screenshots must be readable).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  need+=(fonts-wqy-microhei)
fi
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
echo "installing ${need[*]} for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
command -v chromium
