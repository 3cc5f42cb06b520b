#!/usr/bin/env bash
# The lab end to end on its quick configuration (examples/lab/quick.json): victims, every
# extraction attack, benign streams, membership inference and the KENNEN probe through real
# capsules and the software TEE; then the report's files and numbers are checked for sanity (not
# for science: the quick splits are small), a second run must come entirely from the cache, and
# `lab report` must remake the report. Skips when the lab is not built (no libtorch) or the
# Fashion-MNIST package is absent.
set -uo pipefail
BIN="$(realpath "$1")"; SRC="$2"
LAB="$(dirname "$BIN")/mlcapsule-lab"
if [[ ! -x "$LAB" ]]; then echo "SKIP: mlcapsule-lab is not built (libtorch-dev absent)"; exit 77; fi
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then echo "SKIP: dataset-fashion-mnist is not installed"; exit 77; fi
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; [[ -f "$T/err" ]] && tail -n 40 "$T/err"; exit 1; }

# Bad configurations are refused before any work, naming the field.
echo '{"victims":{"v":{"arch":"cnn-a"}},"policies":{},"bogus":1}' > "$T/bad.json"
"$BIN" lab run "$T/bad.json" --out "$T/bad" >"$T/out" 2>"$T/err" && fail "an unknown field must be refused"
grep -q 'unknown field "bogus"' "$T/err" || fail "the error must name the unknown field"
echo '{"victims":{"v":{"arch":"resnet"}},"policies":{}}' > "$T/bad.json"
"$BIN" lab run "$T/bad.json" --out "$T/bad" >"$T/out" 2>"$T/err" && fail "an unknown architecture must be refused"
grep -q 'unknown architecture "resnet"' "$T/err" || fail "the error must name the architecture"
"$BIN" lab --help >"$T/out" 2>&1 || fail "lab --help"
grep -q "run" "$T/out" && grep -q "report" "$T/out" || fail "lab --help must list run and report"

start=$(date +%s)
"$BIN" lab run "$SRC/examples/lab/quick.json" --out "$T/run" --cache "$T/cache" >"$T/out" 2>"$T/err" \
  || fail "lab run quick.json"
first=$(( $(date +%s) - start ))
echo "quick run: ${first} s"
for f in results.json report.md results.csv fidelity.png roc.png; do
  [[ -s "$T/run/$f" ]] || fail "$f was not written"
done
grep -q "lab \[" "$T/err" || fail "progress lines are missing"

/usr/bin/python3 - "$T/run" <<'PY' || fail "results.json sanity"
import json, struct, sys
d = sys.argv[1]
r = json.load(open(f"{d}/results.json"))
def check(cond, what):
    if not cond:
        print("FAIL:", what); sys.exit(1)
for name, v in r["victims"].items():
    check(0.5 < v["test_accuracy"] <= 1, f"victim {name} test accuracy {v['test_accuracy']}")
ext = {(e["policy"], e["attack"]): e for e in r["extraction"]}
attacks = {"random", "knockoff-random", "knockoff-adaptive", "jbda", "featurefool"}
check({a for p, a in ext if p == "undefended"} == attacks, "every attack ran against the undefended capsule")
for (p, a), e in ext.items():
    budgets = r["config"]["extraction"]["budgets"]
    for c, b in zip(e["checkpoints"], budgets):
        check(0 < c["queries"] <= b, f"{p}/{a}: {c['queries']} queries for budget {b}")
        check(0 <= c["fidelity"] <= 1 and 0 <= c["accuracy"] <= 1, f"{p}/{a}: metrics in [0,1]")
last = ext[("undefended", "random")]["checkpoints"][-1]
check(last["fidelity"] > 0.6, f"random extraction at 500 queries reached only {last['fidelity']}")
for p, a in ext:
    if p == "prada+watermark":
        check("watermark" in ext[(p, a)]["checkpoints"][-1], f"{p}/{a}: no watermark verdict")
        check(ext[(p, a)]["checkpoints"][-1]["watermark"]["samples"] > 0, f"{p}/{a}: no escrowed samples")
# PRADA flags the synthetic-query attacks here, never the benign stream.
check(ext[("prada+watermark", "jbda")]["checkpoints"][-1]["prada_alarm_at"] > 0, "PRADA missed JbDA")
benign = {b["policy"]: b for b in r["benign"]}
check(benign["prada+watermark"]["prada_alarm_at"] < 0, "PRADA alarmed on benign test queries")
check(benign["undefended"]["mean_l1_change"] < 1e-4, "the undefended capsule changed the answers")
check(benign["label"]["top1_agreement"] == 1.0, "label output must keep the top-1")
mia = {(m["victim"], m["policy"]): m for m in r["membership"]}
for key, m in mia.items():
    names = {a["attack"] for a in m["attacks"]}
    check(names == {"loss", "confidence", "entropy", "mentr", "ml-leaks", "lira-online",
                    "lira-offline", "label-only"}, f"{key}: attacks {names}")
    for a in m["attacks"]:
        check(0 <= a["auc"] <= 1, f"{key} {a['attack']}: AUC {a['auc']}")
        check(a["members"] == a["nonmembers"] > 0, f"{key}: unbalanced targets")
check(len(r["kennen"]) == 8, "KENNEN: 2 policies x 4 attributes")
for k in r["kennen"]:
    check(k["ci_low"] <= k["accuracy"] <= k["ci_high"], "KENNEN interval")
for png in ("fidelity.png", "roc.png"):
    head = open(f"{d}/{png}", "rb").read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG")
    w, h = struct.unpack(">II", head[16:24])
    check(w >= 560 and h >= 400, f"{png} is {w}x{h}")
csv = open(f"{d}/results.csv").read().splitlines()
check(csv[0] == "section,victim,policy,attack,queries,metric,value" and len(csv) > 100, "results.csv")
md = open(f"{d}/report.md").read()
for heading in ("## Victims", "## Utility cost", "## Extraction", "## Membership inference",
                "## Reverse engineering"):
    check(heading in md, f"report.md lacks {heading}")
PY

# A second run takes everything from the cache.
rm -f "$T/run/report.md"
start=$(date +%s)
"$BIN" lab run "$SRC/examples/lab/quick.json" --out "$T/run" --cache "$T/cache" >"$T/out" 2>"$T/err" \
  || fail "second lab run"
second=$(( $(date +%s) - start ))
echo "cached run: ${second} s"
/usr/bin/python3 -c "
import json,sys; r=json.load(open('$T/run/results.json'))
missed=[j for j,t in r['timings'].items() if not t['cached']]
sys.exit('jobs not cached: %s' % missed if missed else 0)" || fail "the second run must be a full cache hit"
[[ -s "$T/run/report.md" ]] || fail "the second run must rewrite report.md"
[[ $second -lt 30 ]] || fail "a cached run took ${second} s"

# `lab report` remakes the report from results.json alone.
rm -f "$T/run/report.md" "$T/run/roc.png"
"$BIN" lab report "$T/run" >"$T/out" 2>"$T/err" || fail "lab report"
[[ -s "$T/run/report.md" && -s "$T/run/roc.png" ]] || fail "lab report must rewrite the report and plots"
echo "PASS: lab quick configuration (${first} s, cached ${second} s)"
