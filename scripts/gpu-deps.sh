#!/usr/bin/env bash
# Downloads the Debian packages whose headers the GPU machine's image lacks into .deps/
# (git-ignored through .git/info/exclude), to be carried to the GPU machine: PCRE2, ICU, and
# cpp-httplib for `lathe serve` with the headers httplib.h includes (OpenSSL, zlib, Brotli; their
# libraries are in the image).
source "$(dirname "$0")/lib.sh"
mkdir -p "$LATHE_ROOT/.deps" "$LATHE_ROOT/.git/info"
grep -qx '/.deps/' "$LATHE_ROOT/.git/info/exclude" 2>/dev/null || echo '/.deps/' >>"$LATHE_ROOT/.git/info/exclude"
cd "$LATHE_ROOT/.deps"
apt-get download libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72 \
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libssl-dev zlib1g-dev
