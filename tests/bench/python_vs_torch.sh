#!/bin/bash
# tests/bench/python_vs_torch.sh: issue 13's comparison on Fashion-MNIST, in
# interleaved rounds: PyTorch's own parameter server (torch.distributed.rpc,
# 1 PS + 2 trainers), DistributedDataParallel (gloo, 2 processes), and pskit
# (2 shards + 2 Python workers + a Python evaluator, psrun --worker_command)
# with each given flag set of examples/python/train_fashion_mnist.py. Prints
# one line per run (time to the target, samples/s per trainer and in total)
# and the load average.
#
#   tests/bench/python_vs_torch.sh ROUNDS MODEL [VARIANT ...]
#   e.g. tests/bench/python_vs_torch.sh 3 mlp '' '--n_push 8 --n_fetch 8 --local_update'
#
# MODEL: cnn (target 0.90, evaluations every 5 s) or mlp (0.88, every
# 0.5 s). Like for like: every evaluator (pskit's, and the torch runs' with
# tests/bench/torch_baselines.py --eval concurrent) scores the whole test set
# with 1 thread beside the trainers on the same 2 cores, every interval of
# wall time; time to the target is the wall time at the end of the first
# evaluation at or above it; samples/s are per second of wall time. Every
# trainer has 1 thread, Adam 1e-3, batch 64. EVAL=paused instead gives the
# torch runs their old measure (trainers stopped while a 2-thread evaluator
# runs, training time only), for comparison. Needs build/ (psrun, ps-server, the pskit package),
# Debian's python3-torch and /usr/share/datasets/fashion-mnist.
set -u
rounds=${1:-3}
model=${2:-mlp}
shift 2 || true
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("")
case "$model" in
  cnn) target=0.90 interval=5 max=600 ;;
  mlp) target=0.88 interval=0.5 max=120 ;;
  *) echo "MODEL must be cnn or mlp, got '$model'" >&2; exit 2 ;;
esac
export OPENBLAS_NUM_THREADS=1
load() { cut -d' ' -f1 /proc/loadavg; }

for r in $(seq 1 "$rounds"); do
  for mode in rpc ddp; do
    l=$(load)
    out=$(/usr/bin/python3 tests/bench/torch_baselines.py --mode "$mode" --model "$model" \
          --target "$target" --eval_interval_s "$interval" --max_seconds "$max" \
          --threads 1 --eval "${EVAL:-concurrent}" 2>/dev/null | sed -n 's/^RESULT //p')
    /usr/bin/python3 - "$r" "$mode" "$l" "$out" <<'PY'
import json, sys
r, mode, load, out = sys.argv[1:5]
if not out:
    print(f"round {r} torch {mode}: failed, load {load}"); sys.exit()
j = json.loads(out)
t = f"{j['time_to_target_s']:.1f} s (wall {j['wall_to_target_s']:.1f} s)" if j["reached"] else "not reached"
per = j.get("samples_per_s_per_trainer")
per = " ".join(f"{x:.0f}" for x in per) if isinstance(per, list) else per
print(f"round {r} torch {mode}: to target {t}, samples/s per trainer {per}, "
      f"total {j['samples_per_s_total']:.0f}, load {load}")
PY
  done
  for v in "${variants[@]}"; do
    l=$(load)
    # shellcheck disable=SC2086
    out=$(bash examples/python/run_fashion_mnist.sh --model "$model" --target_accuracy "$target" \
          --eval_interval_s "$interval" --max_seconds "$max" $v 2>&1)
    t=$(sed -n 's/.*evaluator summary:.*target reached after \([0-9.]*\) s.*/\1/p' <<<"$out")
    sps=$(sed -n 's/.*worker summary:.*samples in [0-9.]* s, \([0-9]*\) samples\/s.*/\1/p' <<<"$out")
    total=$(awk '{s += $1} END {print s}' <<<"$sps")
    echo "round $r pskit '$v': to target ${t:-none} s, samples/s per worker $(tr '\n' ' ' <<<"$sps")total ${total:-0}, load $l"
  done
done
