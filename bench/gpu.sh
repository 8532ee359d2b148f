#!/usr/bin/env bash
# The prepared GPU check in one call of a lent machine: `bash bench/gpu.sh` from the repository
# root, with the data (and the packages its image lacks) carried in the ignored folder .gpu/.
#
# Prepare .gpu/ here first (the lent machine reaches no network; its python3 has torch,
# torchvision, transformers, tokenizers, pandas, scikit-learn, typer, rich, pluggy):
#   mkdir -p .gpu/data .gpu/wheels
#   cp ../shared/data/moleculenet/bbbp.csv .gpu/data/ && cp -r ../shared/data/text/sst2 .gpu/data/
#   python -m pip download -d .gpu/wheels --no-deps --only-binary :all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 rdkit
#   python -m pip wheel -w .gpu/wheels --no-deps omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
#   python -m pip download -d .gpu/wheels --no-deps --ignore-requires-python --python-version 3.12 \
#       --only-binary :all: betty-ml==0.2.1
# (31 MB: rdkit 2026.9.1's wheel for the lent machine's Python 3.12; omegaconf's antlr4 is
# only a source archive on PyPI, so it is built into a wheel here).
# then call it with carry [".gpu"] and a timeout of 600 s. Every part writes to bench-gpu/;
# its JSON files are copied to $OUT (the folder the device tool brings back), if set. The
# budget (BUDGET_S, 480 s) leaves two minutes of the tool's 600 for the install and the copy.
set -u
PY=${PYTHON:-python3}
DEST=bench-gpu
BUDGET=${BUDGET_S:-480}
if [ -d .gpu/wheels ]; then
    "$PY" -m pip install -q --no-index --no-deps --ignore-requires-python --find-links .gpu/wheels \
        rdkit omegaconf antlr4-python3-runtime betty-ml 2>&1 | grep -v WARNING | tail -2
fi
# the domains come in through tapweight's entry points: an install (of this folder, no download)
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | grep -v WARNING | tail -2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'GPUs', torch.cuda.device_count())"
timeout $((BUDGET + 60)) "$PY" -m bench gpu --budget-s "$BUDGET" --out "$DEST" \
    --bbbp .gpu/data/bbbp.csv --sst2 .gpu/data/sst2
code=$?
echo "bench gpu: exit $code; $DEST/gpu.json"
"$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print('errors:', d['errors']); \
print('skipped:', d['skipped']); print('seconds:', {k: round(v) for k, v in d['seconds'].items()})" \
    "$DEST/gpu.json"
if [ -n "${OUT:-}" ]; then cp "$DEST"/*.json "$OUT"/; fi
exit $code
