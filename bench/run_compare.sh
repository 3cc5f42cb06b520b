#!/usr/bin/env bash
# Compares MLCapsule's engine with ONNX Runtime 1.30.0 and PyTorch 1.13.1 on the model zoo.
#
#   bench/run_compare.sh [options]          (run from anywhere; paths are relative to the repo)
#
# For every (model, batch, threads) row it runs, one after the other:
#   ours   build/mlcapsule bench zoo/<m>/model.onnx --batch B --threads T --iters N --warmup W
#   ort    node bench/ort_bench.js   zoo/<m>/model.onnx  (same flags)
#   torch  /usr/bin/python3 bench/torch_bench.py zoo/<m>/model.onnx  (same flags)
# appends one JSON line per command to bench/results/compare-<date>.jsonl (a failed command gives
# an error row) and finally prints a Markdown table (bench/compare_table.py table FILE).
#
# options:
#   --models a,b,c     default lenet,mobilenet_v2,squeezenet1_1,resnet18
#   --batches "1 32"   default "1 32"
#   --threads "1 2"    default "1 2"
#   --engine PATH      our binary (default build/mlcapsule)
#   --zoo DIR          model zoo (default zoo; make it with /usr/bin/python3 tools/export_zoo.py)
#   --out FILE         results file (default bench/results/compare-YYYYmmdd-HHMMSS.jsonl)
#   --quick            a tenth of the iterations (smoke test; numbers are not for reporting)
#   --wait-idle S      before each row wait up to S seconds for the machine to be idle
#                      (other processes using < 10% CPU); default 0 = just record it
#   --timeout S        per-command time limit in seconds (default 300)
#   -h, --help
set -uo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "run_compare.sh: $*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="lenet,mobilenet_v2,squeezenet1_1,resnet18"
BATCHES="1 32"
THREADS="1 2"
ENGINE="build/mlcapsule"
ZOO="zoo"
OUT=""
QUICK=0
WAIT_IDLE=0
TIMEOUT=300
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --models) MODELS="${2:?--models needs a value}"; shift 2 ;;
    --batches) BATCHES="${2:?--batches needs a value}"; shift 2 ;;
    --threads) THREADS="${2:?--threads needs a value}"; shift 2 ;;
    --engine) ENGINE="${2:?--engine needs a value}"; shift 2 ;;
    --zoo) ZOO="${2:?--zoo needs a value}"; shift 2 ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --wait-idle) WAIT_IDLE="${2:?--wait-idle needs a value}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
cd "$ROOT" || die "cannot cd to $ROOT"

PY=/usr/bin/python3
[[ -x "$PY" ]] || die "$PY not found (Debian's python3 with torch is needed)"
command -v node >/dev/null || die "node not found on PATH"
[[ -f bench/node_modules/onnxruntime-node/package.json ]] \
  || die "onnxruntime-node is not installed: run bench/setup_ort.sh"
for f in bench/ort_bench.js bench/torch_bench.py bench/compare_table.py tools/zoo_models.py; do
  [[ -f "$f" ]] || die "missing $f"
done
IFS=',' read -r -a MODEL_LIST <<<"$MODELS"
for m in "${MODEL_LIST[@]}"; do
  [[ -f "$ZOO/$m/model.onnx" ]] \
    || die "missing $ZOO/$m/model.onnx: run /usr/bin/python3 tools/export_zoo.py --out $ZOO"
done
[[ -x "$ENGINE" ]] || echo "run_compare.sh: note: $ENGINE is not an executable yet; its rows will be errors" >&2

# iterations per (model, batch): about 1-2 s of timed work per engine and row at 1 thread,
# so that the default run (4 models x 2 batches x 2 threads x 3 engines) stays well under 15 min.
iters_for() {  # model batch -> "ITERS WARMUP"
  case "$1:$2" in
    lenet:1)            echo "2000 50" ;;
    lenet:*)            echo "300 10" ;;
    mlp:1)              echo "2000 50" ;;
    mlp:*)              echo "500 10" ;;
    mobilenet_v2:1)     echo "100 5" ;;
    mobilenet_v2:*)     echo "8 3" ;;
    squeezenet1_1:1)    echo "100 5" ;;
    squeezenet1_1:*)    echo "10 3" ;;
    resnet18:1)         echo "40 5" ;;
    resnet18:*)         echo "6 3" ;;
    *:1)                echo "50 5" ;;
    *)                  echo "10 3" ;;
  esac
}

# CPU use (percent of all CPUs) by everything over ~1 s; we run nothing meanwhile, so this is
# what other processes take away from the benchmark.
busy_pct() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  (( total > 0 )) && echo $(( 100 * (total - idle) / total )) || echo 0
}

DATE="$(date +%Y%m%d-%H%M%S)"
[[ -n "$OUT" ]] || OUT="bench/results/compare-$DATE.jsonl"
mkdir -p "$(dirname "$OUT")" || die "cannot create $(dirname "$OUT")"
TMP="$(mktemp -d)"
CHILD=""
trap 'rm -rf "$TMP"' EXIT
# `timeout` puts the command in its own process group, so Ctrl-C would not reach it: forward.
on_signal() {
  [[ -n "$CHILD" ]] && kill -TERM -- "-$CHILD" 2>/dev/null
  echo "run_compare.sh: interrupted; partial results in $OUT" >&2
  exit 130
}
trap on_signal INT TERM

# meta line: what ran where
{
  cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  dirty="$(git status --porcelain 2>/dev/null | head -1)"
  ortv="$(node -p "require('./bench/node_modules/onnxruntime-node/package.json').version" 2>/dev/null)"
  "$PY" - "$DATE" "$cpu" "$(nproc)" "$ENGINE" "$commit${dirty:+-dirty}" "$ortv" "$QUICK" <<'PYEOF'
import json, sys
d, cpu, n, eng, commit, ortv, quick = sys.argv[1:]
print(json.dumps({"kind": "meta", "date": d, "cpu": cpu, "nproc": int(n), "engine_bin": eng,
                  "git": commit, "onnxruntime_node": ortv, "quick": quick == "1"}))
PYEOF
} >"$OUT"

run_one() {  # role engine_default row busy model batch threads iters warmup -- cmd...
  local role="$1" edef="$2" row="$3" busy="$4" m="$5" b="$6" t="$7" n="$8" w="$9"
  shift 10
  local rc t0 t1
  t0="$(date +%s.%N)"
  if [[ "$role" == ours && ! -x "$1" ]]; then
    echo "$1 does not exist or is not executable" >"$TMP/err"; : >"$TMP/out"; rc=127
  else
    timeout "$TIMEOUT" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
  fi
  t1="$(date +%s.%N)"
  "$PY" bench/compare_table.py wrap --role "$role" --engine-default "$edef" --model "$m" \
    --batch "$b" --threads "$t" --iters "$n" --warmup "$w" --rc "$rc" \
    --stdout "$TMP/out" --stderr "$TMP/err" --row "$row" --busy "$busy" \
    --wall-s "$(echo "$t1 - $t0" | bc 2>/dev/null || echo 0)" --cmd "$*" | tee -a "$OUT" \
    | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); print("    %-6s %s" % (r["role"], ("%.3f ms" % r["median_ms"]) if "median_ms" in r else r.get("error","?")))' >&2
}

START=$SECONDS
row=0
nrows=$(( ${#MODEL_LIST[@]} * $(wc -w <<<"$BATCHES") * $(wc -w <<<"$THREADS") ))
echo "run_compare: $nrows rows -> $OUT" >&2
for m in "${MODEL_LIST[@]}"; do
  model="$ZOO/$m/model.onnx"
  for b in $BATCHES; do
    read -r n w < <(iters_for "$m" "$b")
    if (( QUICK )); then n=$(( n / 10 > 2 ? n / 10 : 2 )); w=$(( w > 2 ? 2 : w )); fi
    for t in $THREADS; do
      row=$(( row + 1 ))
      busy="$(busy_pct)"
      waited=0
      while (( busy >= 10 && waited < WAIT_IDLE )); do
        sleep 4; waited=$(( waited + 5 )); busy="$(busy_pct)"
      done
      echo "[$row/$nrows] $m batch $b threads $t iters $n warmup $w (other CPU use ${busy}%, $(( SECONDS - START ))s elapsed)" >&2
      (( busy >= 25 )) && echo "    warning: the machine is busy (${busy}%), timings of this row are unreliable" >&2
      flags=(--batch "$b" --threads "$t" --iters "$n" --warmup "$w")
      run_one ours  mlcapsule          "$row" "$busy" "$m" "$b" "$t" "$n" "$w" -- "$ENGINE" bench "$model" "${flags[@]}"
      run_one ort   onnxruntime-1.30.0 "$row" "$busy" "$m" "$b" "$t" "$n" "$w" -- node bench/ort_bench.js "$model" "${flags[@]}"
      run_one torch pytorch-1.13.1     "$row" "$busy" "$m" "$b" "$t" "$n" "$w" -- "$PY" bench/torch_bench.py "$model" "${flags[@]}"
    done
  done
done
echo "done in $(( SECONDS - START ))s; results: $OUT" >&2
echo
"$PY" bench/compare_table.py table "$OUT"
