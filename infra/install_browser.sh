#!/usr/bin/env bash
# Headless Chromium and its WebDriver for tests/pipelines/test_report_browser.py (Debian packages).
# Idempotent: does nothing when both are already on PATH. Needs root and apt-get otherwise;
# without them it says so and exits 0 (the browser test then skips with that reason).
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_browser.sh: chromium/chromedriver missing and cannot install them (need root and apt-get)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium && command -v chromedriver
