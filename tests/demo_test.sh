#!/usr/bin/env bash
# `mlcapsule demo` end to end (docs/demo.md): the whole run with --strict (PRADA flags the thief,
# the honest customer raises no alarm, the memorising thief is identified), its JSON summary and
# narrative, the files it lists, the secrets' modes, and that no process it started outlives it,
# both after a normal run and after SIGINT in the middle (checked by session id: the demo runs in a
# session of its own). Usage: demo_test.sh MLCAPSULE. Exit 77 (skip) without mlcapsule-lab or
# Fashion-MNIST (Debian's dataset-fashion-mnist).
set -uo pipefail
MLC=$(realpath "$1")
LAB="$(dirname "$MLC")/mlcapsule-lab"
DATA=/usr/share/datasets/fashion-mnist
[[ -x "$LAB" ]] || { echo "SKIP: $LAB is not built (libtorch)"; exit 77; }
[[ -f "$DATA/t10k-images-idx3-ubyte.gz" ]] || { echo "SKIP: $DATA is missing"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
failures=0
check() {  # NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then echo "ok: $1"; else echo "FAIL: $1: expected '$2', got '$3'"; failures=$((failures + 1)); fi
}
contains() {  # NAME NEEDLE HAYSTACK
  if [[ "$3" == *"$2"* ]]; then echo "ok: $1"; else echo "FAIL: $1: '$2' not found"; failures=$((failures + 1)); fi
}
leftovers() {  # SID: the processes still in that session after up to 5 s (orphans exit on EOF)
  local left
  for _ in $(seq 50); do
    left=$(ps -e -o sid=,pid=,args= | awk -v s="$1" '$1 == s')
    [[ -z "$left" ]] && break
    sleep 0.1
  done
  echo "$left"
}

# 1. The whole demo, in its own session (setsid execs it: its pid is the session id).
start=$(date +%s)
setsid "$MLC" demo --out demo --strict --json >summary.json 2>narrative.txt &
SID=$!
wait "$SID"
rc=$?
echo "demo: exit $rc after $(( $(date +%s) - start )) s"
check "demo --strict exits 0" 0 "$rc"
[[ $rc -eq 0 ]] || tail -40 narrative.txt
check "no process of the demo's session is left" "" "$(leftovers "$SID")"
narrative=$(cat narrative.txt)
for n in 1 2 3 4 5 6 7 8 9 10; do contains "stage heading [$n/10]" "[$n/10]" "$narrative"; done
contains "commands are printed" "demo/victim.capsule --state demo/bob/state" "$narrative"
contains "the attack's progress (a line per 10% in a file)" "2000/2000" "$narrative"
contains "summary table" "Summary" "$narrative"
contains "file list" "purpose" "$narrative"
contains "honest about the generalising thief" '"Not identified" is not "innocent"' "$narrative"
python3 - summary.json demo <<'PY' || failures=$((failures + 1))
import json, os, stat, sys
s = json.load(open(sys.argv[1]))
out = sys.argv[2]
bad = []
def need(name, ok):
    print(("ok: " if ok else "FAIL: ") + name)
    if not ok: bad.append(name)
need("summary ok", s["ok"] is True)
need("ten stages", [st["stage"] for st in s["stages"]] == list(range(1, 11)))
need("every check held", s["checks"] and all(s["checks"].values()))
need("bob: 100 queries answered, billed", s["bob"]["queries"] == 100 and
     any(l["queries"] == 100 for l in s["bob"]["billed"]["lines"]))
need("bob: nothing escrowed", s["bob"]["escrowed"] == 0 and s["bob"]["prada_alarm"] is False)
need("the thief made its queries", s["attack"]["queries"] == 2000)
need("PRADA alarm on mallory", s["provider"]["prada_alarm_at"] > 0)
wm = {v["thief"]: v for v in s["provider"]["watermark"]}
need("thief A identified", wm["memorising"]["identified"] is True and
     wm["memorising"]["log2_chance"] < -64)
need("thief B has a verdict", "identified" in wm["generalising"])
need("mallory billed for 2000 queries", sum(l["queries"] for l in s["provider"]["mallory_billed"]["lines"]) == 2000)
for f in s["files"]:
    need("listed file exists: " + f["path"], os.path.exists(f["path"]) and f["purpose"])
for secret in ["provider/provider.key", "provider/escrow.key", "server/tls.key", "server/admin.token",
               "bob/license.token", "mallory/license.token"]:
    need(secret + " is 0600", stat.S_IMODE(os.stat(os.path.join(out, secret)).st_mode) == 0o600)
need("stolen models exist", os.path.getsize(os.path.join(out, "mallory/stolen-memorising.onnx")) > 0)
need("summary.json on disk matches", json.load(open(os.path.join(out, "summary.json")))["ok"] is True)
sys.exit(1 if bad else 0)
PY

# 2. An existing directory is not overwritten without --force, nor a foreign one with it.
"$MLC" demo --out demo --no-attack >/dev/null 2>err.txt
check "existing --out refused" 1 "$?"
contains "says --force" "pass --force" "$(cat err.txt)"
mkdir foreign && echo keep >foreign/file
"$MLC" demo --out foreign --force --no-attack >/dev/null 2>err.txt
check "foreign --out refused even with --force" 1 "$?"
contains "says why" "not an earlier demo" "$(cat err.txt)"
check "foreign file kept" keep "$(cat foreign/file)"

# 3. SIGINT once the license server runs: exit 130, and every process started is gone.
setsid "$MLC" demo --out interrupted --no-progress >int.out 2>int.err &
SID=$!
for _ in $(seq 300); do
  grep -q '^listening' interrupted/server/server.out 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
kill -INT "$SID"
wait "$SID"
check "SIGINT: exit 130" 130 "$?"
check "SIGINT: no process of the demo's session is left" "" "$(leftovers "$SID")"
contains "SIGINT: says so" "interrupted" "$(cat int.err)"

echo "demo_test: $failures failure(s)"
[[ $failures -eq 0 ]]
