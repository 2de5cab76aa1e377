#!/usr/bin/env bash
# usage: tools/hf_tests/run.sh HF_ROOT PYTHON RESULTS [pytest args...]
#   HF_ROOT  a folder holding transformers' tests/ tree for the installed transformers version
#   PYTHON   the interpreter of the venv to test (e.g. .venv/bin/python)
#   RESULTS  where the junit XML, logs and counts go
# Runs tests/models/<family>/test_modeling_<family>.py of the three Qwen-VL families twice,
# unpatched and with -p tcpatch (class-level patch, vidcom2 at ratio 1.0), one pytest at a time,
# then diff.py compares the outcomes test by test. Needs pytest-timeout and parameterized
# importable (e.g. pip install --target DIR, DIR on PYTHONPATH); runs offline; @slow stays skipped.
set -u
HF_ROOT=$(cd "$1" && pwd); RESULTS=$(mkdir -p "$3" && cd "$3" && pwd)
PYARG=$2; shift 3
HERE=$(cd "$(dirname "$0")" && pwd)
case $PYARG in */*) PY=$(cd "$(dirname "$PYARG")" && pwd)/$(basename "$PYARG") ;; *) PY=$(command -v "$PYARG") ;; esac
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
cd "$HF_ROOT"
for label in unpatched patched; do
  plug=(); [ "$label" = patched ] && plug=(-p tcpatch)
  for fam in qwen2_vl qwen2_5_vl qwen3_vl; do
    TC_COUNTS_FILE=$RESULTS/$label-$fam.counts "$PY" -m pytest -p no:cacheprovider "${plug[@]}" -q -rA \
      --timeout=600 --junitxml="$RESULTS/$label-$fam.xml" "tests/models/$fam/test_modeling_$fam.py" "$@" \
      > "$RESULTS/$label-$fam.log" 2>&1
    echo "$label $fam: $(tail -1 "$RESULTS/$label-$fam.log")"
  done
done
"$PY" "$HERE/diff.py" "$RESULTS"
