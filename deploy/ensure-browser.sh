#!/usr/bin/env bash
# Make sure Debian's Chromium and its driver are installed, for the review page's
# browser test (tests/test_review_page.py). Nothing is downloaded at test time:
# Selenium drives /usr/bin/chromium through /usr/bin/chromedriver. A CJK font
# makes the screenshots in docs/img legible.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "browser: $(command -v chromium) and $(command -v chromedriver)"; exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null
echo "browser: installed Debian's chromium and chromium-driver"
