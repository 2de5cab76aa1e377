#!/usr/bin/env bash
# Stock lmms-eval (0.7.x), compressed: `pip install ".[eval]"`, then this. The VidCom² authors'
# command line; only the two variables are new. Usage:
#   bash examples/lmms_eval.sh [MODEL] [TASKS] [OUTPUT]
#   MODEL   a hub id or local folder (default Qwen/Qwen2.5-VL-7B-Instruct)
#   TASKS   lmms-eval task names (default videomme)
# Environment: COMPRESSOR (default vidcom2), R_RATIO (share of video tokens KEPT, default 0.25),
# NUM_PROCESSES (default: one per GPU), LMMS_MODEL (qwen2_vl, qwen2_5_vl or qwen3_vl; default
# from the model name), MODEL_ARGS (more --model_args, e.g. "attn_implementation=flash_attention_2"),
# LMMS_EXTRA (more lmms-eval arguments, e.g. "--limit 8").
# The run ends with token-compressor's table; with --output_path its JSON lies next to
# lmms-eval's results (the log says where).
set -euo pipefail
MODEL=${1:-Qwen/Qwen2.5-VL-7B-Instruct}
TASKS=${2:-videomme}
OUTPUT=${3:-./logs/}
case "${LMMS_MODEL:-$MODEL}" in
  *qwen3*|*Qwen3*) LMMS_MODEL=qwen3_vl ;;
  *2.5*|*2_5*) LMMS_MODEL=qwen2_5_vl ;;
  *) LMMS_MODEL=${LMMS_MODEL:-qwen2_vl} ;;
esac
if [ -z "${NUM_PROCESSES:-}" ]; then
  NUM_PROCESSES=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
CPU=()
MODEL_ARGS=${MODEL_ARGS:-}
if [ "$(python -c 'import torch; print(torch.cuda.is_available())')" = "False" ]; then
  CPU=(--cpu); MODEL_ARGS="device=cpu,device_map=cpu${MODEL_ARGS:+,$MODEL_ARGS}"
fi
export COMPRESSOR=${COMPRESSOR:-vidcom2} R_RATIO=${R_RATIO:-0.25}
# shellcheck disable=SC2086
accelerate launch "${CPU[@]}" --num_processes="$NUM_PROCESSES" -m lmms_eval \
    --model "$LMMS_MODEL" --model_args "pretrained=$MODEL,max_num_frames=32${MODEL_ARGS:+,$MODEL_ARGS}" \
    --tasks "$TASKS" --batch_size 1 --log_samples --output_path "$OUTPUT" ${LMMS_EXTRA:-}
