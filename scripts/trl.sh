# shellcheck shell=bash
# Sourced after scripts/libtorch.sh by scripts/gen_sequence_reference.py, which takes the generalised
# JSD's reference from TRL's own `GKDTrainer.generalized_jsd_loss`. Tests never need it.
#
# Installs trl 1.16.0 and what `trl.experimental.gkd` imports (transformers, accelerate, datasets and
# their dependencies), pinned, beside the cached torch in $DISTILL_CACHE, once; then puts that folder
# on PYTHONPATH. `--no-deps` keeps pip from installing a second torch: the cached one is used.

TRL_VERSION=1.16.0
TRL_SITE="$DISTILL_CACHE/trl-$TRL_VERSION"
TRL_PACKAGES=(
  "trl==$TRL_VERSION" "transformers==5.23.0" "accelerate==1.15.0" "datasets==5.2.0"
  "huggingface-hub==2.4.0" "tokenizers==0.23.3" "safetensors==0.8.0" "hf-xet==1.8.0"
  "numpy==2.4.6" "packaging==26.4" "pyyaml==6.0.4" "regex==2026.12.2" "tqdm==4.70.1" "filelock==4.3.2"
  "fsspec==2026.9.0" "psutil==7.2.2" "requests==2.34.2" "urllib3==2.8.0" "idna==3.21" "certifi==2026.10.19.post1"
  "charset-normalizer==3.5.3" "typing-extensions==4.16.0" "typer==0.29.2" "click==8.5.1" "rich==15.0.0"
  "shellingham==1.5.4" "markdown-it-py==4.3.0" "mdurl==0.1.2" "pygments==2.21.0" "annotated-doc==0.0.7"
  "httpx2==2.17.0" "httpcore2==2.17.0" "h11==0.16.0" "anyio==4.16.0" "truststore==0.10.5"
  "pyarrow==26.0.1" "dill==0.4.1" "pandas==3.1.1" "xxhash==4.1.0" "multiprocess==0.70.19"
  "python-dateutil==4.0.0" "pytz==2026.6" "tzdata==2026.6" "six==1.17.0"
)

if [ ! -d "$TRL_SITE/trl" ]; then
  echo "distill: installing trl $TRL_VERSION and its imports into $TRL_SITE (one time, reused afterwards)" >&2
  rm -rf "$TRL_SITE.partial"
  # Install beside the final folder and rename, so an interrupted install is never taken as complete.
  python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
    --target "$TRL_SITE.partial" "${TRL_PACKAGES[@]}" >&2
  rm -rf "$TRL_SITE"
  mv "$TRL_SITE.partial" "$TRL_SITE"
fi

export PYTHONPATH="$TRL_SITE${PYTHONPATH:+:$PYTHONPATH}"
