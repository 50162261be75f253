#!/usr/bin/env bash
# Install the pages' browser files from the npm registry (voucher_service/web/assets/package-lock.json)
# and copy what the pages serve into voucher_service/web/static/vendor/ (gitignored). Nothing is
# fetched from the internet at run time.
set -euo pipefail
cd "$(dirname "$0")/../voucher_service/web"
(cd assets && npm ci --no-audit --no-fund --loglevel=error)
rm -rf static/vendor
mkdir -p static/vendor/barcode-detector static/vendor/zxing-wasm static/vendor/qrcode-generator
cp assets/node_modules/barcode-detector/dist/iife/ponyfill.js static/vendor/barcode-detector/ponyfill.js
cp assets/node_modules/barcode-detector/LICENSE static/vendor/barcode-detector/LICENSE
cp assets/node_modules/zxing-wasm/dist/reader/zxing_reader.wasm static/vendor/zxing-wasm/zxing_reader.wasm
cp assets/node_modules/zxing-wasm/LICENSE static/vendor/zxing-wasm/LICENSE
# The wallet draws holder-bound live codes (VP1) itself: MIT, its licence is the file's header.
cp assets/node_modules/qrcode-generator/dist/qrcode.js static/vendor/qrcode-generator/qrcode.js
