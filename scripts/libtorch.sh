# shellcheck shell=bash
# Sourced by scripts/dev: finds or installs libtorch 2.13.0 (the version tch 0.26 pins) and
# exports what cargo and the built binaries need. Nothing is downloaded when a usable copy exists.
#
# Order of preference:
#   1. $LIBTORCH, when it points at a libtorch folder (has lib/ and include/);
#   2. the cached pip install in $DISTILL_CACHE (default ~/.cache/distill), reused across clones;
#   3. a fresh `pip install torch==2.13.0` into that cache (≈4.7 GB with its CUDA deps; runs on CPU).

TORCH_VERSION=2.13.0
DISTILL_CACHE=${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}
TORCH_SITE="$DISTILL_CACHE/torch-$TORCH_VERSION"

distill_libtorch_ok() { [ -d "$1/lib" ] && [ -d "$1/include" ]; }

if [ -n "${LIBTORCH:-}" ] && distill_libtorch_ok "$LIBTORCH"; then
  :
elif distill_libtorch_ok "$TORCH_SITE/torch"; then
  export LIBTORCH="$TORCH_SITE/torch"
else
  echo "distill: installing torch==$TORCH_VERSION into $TORCH_SITE (one time, reused afterwards)" >&2
  mkdir -p "$DISTILL_CACHE"
  rm -rf "$TORCH_SITE.partial"
  # Install beside the final folder and rename, so an interrupted install is never taken as complete.
  python3 -m pip install --quiet --no-input --disable-pip-version-check \
    --target "$TORCH_SITE.partial" "torch==$TORCH_VERSION" >&2
  rm -rf "$TORCH_SITE"
  mv "$TORCH_SITE.partial" "$TORCH_SITE"
  export LIBTORCH="$TORCH_SITE/torch"
fi

# Python torch (for the reference-vector and benchmark scripts) lives in the same site folder.
if [ -d "$(dirname "$LIBTORCH")/torch" ]; then
  export PYTHONPATH="$(dirname "$LIBTORCH")${PYTHONPATH:+:$PYTHONPATH}"
fi
# Built binaries also carry an rpath to this folder (build.rs); this covers everything else.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
