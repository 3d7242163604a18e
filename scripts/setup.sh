#!/usr/bin/env bash
# Installs build dependencies, fetches the default model and builds lathe (Release) into build/.
# Idempotent: re-running only rebuilds what changed.
source "$(dirname "$0")/lib.sh"

apt_ensure "${LATHE_BUILD_DEPS[@]}" python3 python3-pip
"$LATHE_ROOT/scripts/fetch-model.sh"
configure_build "$LATHE_BUILD" -DCMAKE_BUILD_TYPE=Release "$@"
