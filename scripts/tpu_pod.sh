#!/usr/bin/env bash
# Runs on every worker of a TPU pod slice (scripts/launch_sweep.py --mode=tpu starts it with
# `gcloud compute tpus tpu-vm ssh --worker=all`), from the copy of the repository there:
#
#   bash scripts/tpu_pod.sh LAUNCH_SWEEP_ARGS...
#
# 1. The environment, once per worker (like big_vision's run_tpu.sh): a virtualenv at
#    $ROPE_VENV (default ~/rope_venv) with this repository's `tpu` extra (jax[tpu], gcsfs,
#    google-cloud-storage) at the tested versions (constraints.txt). An existing one is reused;
#    delete it to reinstall.
# 2. The sweep, detached: `python scripts/launch_sweep.py LAUNCH_SWEEP_ARGS...` under
#    setsid + nohup (an ssh disconnect does not stop it), output in $ROPE_LOGS/sweep.log
#    (default ~/rope_logs), its pid in $ROPE_LOGS/sweep.pid; each run's output also goes to
#    <workdir>/logs/train.<host>.log (launch_sweep.py --logs_in_workdir). Refuses to start while
#    a sweep started here is still running (the TPU chips serve one process).
#
# Stop it on every worker (each run saves a checkpoint first; re-launching resumes):
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#       --command='kill -TERM $(cat ~/rope_logs/sweep.pid)'
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ROPE_VENV:-$HOME/rope_venv}"
LOGS="${ROPE_LOGS:-$HOME/rope_logs}"
mkdir -p "$LOGS"

if [[ -f "$LOGS/sweep.pid" ]] && kill -0 "$(cat "$LOGS/sweep.pid")" 2>/dev/null; then
  echo "tpu_pod.sh: a sweep is running on $(hostname) (pid $(cat "$LOGS/sweep.pid"), log" \
       "$LOGS/sweep.log); stop it first." >&2
  exit 1
fi

if [[ ! -f "$VENV/bin/activate" ]]; then
  echo "tpu_pod.sh: creating $VENV (jax[tpu] and this repository's requirements)..."
  python3 -m venv "$VENV" || {  # Ubuntu TPU images may lack the venv module.
    sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv
    python3 -m venv "$VENV"; }
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[tpu]" -c constraints.txt
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

setsid nohup python scripts/launch_sweep.py "$@" > "$LOGS/sweep.log" 2>&1 < /dev/null &
echo $! > "$LOGS/sweep.pid"
echo "tpu_pod.sh: started the sweep on $(hostname) (pid $!); log: $LOGS/sweep.log"
