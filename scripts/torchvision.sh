# shellcheck shell=bash
# Sourced after scripts/libtorch.sh by the Python scripts that need torchvision (the generator of the
# vision reference vectors, the PyTorch side of the torch_teacher example). Tests never need it.
#
# Installs torchvision 0.28.0 (the release paired with torch 2.13.0) and what it imports — numpy and
# pillow — plus safetensors, pinned, beside the cached torch in $DISTILL_CACHE, once; then puts that
# folder on PYTHONPATH. `--no-deps` keeps pip from installing a second torch: the cached one is used.

TORCHVISION_VERSION=0.28.0
TORCHVISION_SITE="$DISTILL_CACHE/torchvision-$TORCHVISION_VERSION"
TORCHVISION_PACKAGES=("torchvision==$TORCHVISION_VERSION" "numpy==2.4.6" "pillow==13.0.0" "safetensors==0.8.0")

if [ ! -d "$TORCHVISION_SITE/torchvision" ]; then
  echo "distill: installing ${TORCHVISION_PACKAGES[*]} into $TORCHVISION_SITE (one time, reused afterwards)" >&2
  rm -rf "$TORCHVISION_SITE.partial"
  # Install beside the final folder and rename, so an interrupted install is never taken as complete.
  python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
    --target "$TORCHVISION_SITE.partial" "${TORCHVISION_PACKAGES[@]}" >&2
  rm -rf "$TORCHVISION_SITE"
  mv "$TORCHVISION_SITE.partial" "$TORCHVISION_SITE"
fi

export PYTHONPATH="$TORCHVISION_SITE${PYTHONPATH:+:$PYTHONPATH}"
