#!/usr/bin/env bash
# Puts the atlas's Python dependencies, less torch, into .bench-deps/ so that `python -m bench --only gpu`
# runs on a GPU machine that has PyTorch and CUDA but no package registry:
#   bash bench/gpu-deps.sh [PYTHON_VERSION]       # where a registry is reachable (default: this Python's)
#   PYTHONPATH=.bench-deps:. python -m bench --only gpu    # on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PYV="${1:-$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')}"
rm -rf .bench-deps
python3 -m pip install -q --target .bench-deps --python-version "$PYV" --only-binary=:all: --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --implementation cp \
  "transformer_lens>=3.9,<4" "pandas>=2.1,<4" "numpy>=1.26,<3" "networkx>=3.2,<4" "scipy>=1.11,<2" "tqdm>=4.66,<5" "jaxtyping" \
  "neo4j>=5.20,<7"
# torch comes from the GPU machine itself: drop the copy transformer_lens pulled in
rm -rf .bench-deps/torch .bench-deps/torch-* .bench-deps/nvidia* .bench-deps/triton*
echo "wrote .bench-deps for Python $PYV ($(du -sh .bench-deps | cut -f1))"
