#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then the installed tree on its own (docs/install.md):
# the layout (binaries, library and its SONAME links, headers, man pages, systemd unit, docs),
# `mlcapsule --version`, the installed mlcapsule starting the installed mlcapsule-core (air-gapped
# licensing and a guarded run), and a C program built against the installed headers and library
# alone finding the installed core. With --deb it also builds the Debian packages with cpack and
# checks them with dpkg-deb (contents, and the Depends that dpkg-shlibdeps computed); it never
# installs them.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR ONNX_NODE_DATA LIBDIR VERSION [--deb]
set -uo pipefail
BUILD="$(realpath "$1")"; SRC="$(realpath "$2")"; DATA="$3"; LIBDIR="$4"; VERSION="$5"
DEB=0; [[ "${6:-}" == "--deb" ]] && DEB=1
M="$DATA/test_softmax_axis_1"
[[ -d "$M" ]] || { echo "SKIP: $DATA is absent"; exit 77; }
for f in mlcapsule mlcapsule-core libmlcapsule.so.$VERSION; do
  [[ -e "$BUILD/$f" ]] || { echo "SKIP: $BUILD/$f is not built"; exit 77; }
done
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
S="$T/stage"
fail() { echo "FAIL: $*"; [[ -f "$T/err" ]] && cat "$T/err"; exit 1; }
expect_exit() { local want="$1"; shift; "$@" >"$T/out" 2>"$T/err"; local got=$?; [[ $got -eq $want ]] || fail "exit $got, expected $want: $*"; }
now() { date +%s.%N; }
took() { printf '%s: %.1f s\n' "$1" "$(echo "$(now) - $2" | bc)"; }

t0=$(now)
expect_exit 0 cmake --install "$BUILD" --prefix "$S"
took "cmake --install" "$t0"

# Layout.
for f in bin/mlcapsule bin/mlcapsule-core; do [[ -x "$S/$f" && -f "$S/$f" ]] || fail "$f is not installed"; done
if [[ -x "$BUILD/mlcapsule-lab" ]]; then [[ -x "$S/bin/mlcapsule-lab" ]] || fail "bin/mlcapsule-lab is not installed"; fi
L="$S/$LIBDIR"
[[ -f "$L/libmlcapsule.so.$VERSION" && ! -L "$L/libmlcapsule.so.$VERSION" ]] || fail "$LIBDIR/libmlcapsule.so.$VERSION is missing"
soname="$(readelf -d "$L/libmlcapsule.so.$VERSION" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
[[ "$soname" == "libmlcapsule.so.${VERSION%%.*}" ]] || fail "SONAME is '$soname'"
[[ "$(readlink "$L/$soname")" == "libmlcapsule.so.$VERSION" ]] || fail "$soname must link to libmlcapsule.so.$VERSION"
[[ "$(readlink "$L/libmlcapsule.so")" == "$soname" ]] || fail "libmlcapsule.so must link to $soname"
readelf -d "$S/bin/mlcapsule" "$L/libmlcapsule.so.$VERSION" | grep -q 'R.*PATH' && fail "an installed file keeps the build tree's RPATH"
for h in mlcapsule.h mlcapsule.hpp; do [[ -f "$S/include/mlcapsule/$h" ]] || fail "include/mlcapsule/$h is missing"; done
for d in README.md docs/cli.md docs/install.md docs/policy.md docs/server.md examples/policies/probabilities.json; do
  [[ -f "$S/share/doc/mlcapsule/$d" ]] || fail "share/doc/mlcapsule/$d is missing"
done
[[ -d "$S/share/doc/mlcapsule/docs/dev" ]] && fail "developer notes (docs/dev) must not be installed"
if command -v help2man >/dev/null; then
  for p in mlcapsule mlcapsule-run mlcapsule-server; do
    gzip -dc "$S/share/man/man1/$p.1.gz" 2>/dev/null | grep -qi "^\.TH $p " || fail "man page $p.1.gz is missing or bad"
  done
else
  echo "note: help2man is absent, man pages not checked"
fi
U="$S/lib/systemd/system/mlcapsule-server.service"
[[ -f "$U" ]] || fail "the systemd unit is missing"
grep -q "^ExecStart=$S/bin/mlcapsule server " "$U" || fail "ExecStart must name the installed mlcapsule"
for k in DynamicUser=yes StateDirectory=mlcapsule NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes; do
  grep -qx "$k" "$U" || fail "the unit lacks $k"
done
if command -v systemd-analyze >/dev/null; then
  # --man=no: the unit's Documentation= names the installed man page, not in MANPATH here.
  expect_exit 0 systemd-analyze verify --man=no "$U"
  echo "systemd-analyze verify: ok"
else
  echo "note: systemd-analyze is absent, the unit is not verified"
fi
# The unit's ExecStart, by hand (PID 1 here need not be systemd): its defaults from Environment=,
# /var/lib/mlcapsule and the credentials directory moved into $T, any free port.
mkdir -p "$T/var" "$T/cred"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$T/cred/tls.key" -out "$T/cred/tls.crt" >/dev/null 2>&1 || fail "openssl req"
exec_line="$(sed -n '/^ExecStart=/,/[^\\]$/p' "$U" | sed 's/\\$//; s/^ExecStart=//' | tr '\n' ' ')"
db="$(sed -n 's/^Environment=MLCAPSULE_DB=//p' "$U")"
exec_line="${exec_line//'${MLCAPSULE_DB}'/$db}"
exec_line="${exec_line//'${MLCAPSULE_LISTEN}'/127.0.0.1:0}"
exec_line="${exec_line//'${CREDENTIALS_DIRECTORY}'/$T/cred}"
exec_line="${exec_line//'$MLCAPSULE_SERVER_ARGS'/}"
exec_line="${exec_line//\/var\/lib\/mlcapsule/$T/var}"
read -r -a server_cmd <<< "$exec_line"
[[ "${server_cmd[0]}" == "$S/bin/mlcapsule" && "${server_cmd[1]}" == server ]] || fail "ExecStart: $exec_line"
env -i PATH=/usr/bin:/bin "${server_cmd[@]}" >"$T/server.out" 2>"$T/server.err" &
server_pid=$!
for _ in $(seq 50); do grep -q "listening on https://" "$T/server.out" && break; sleep 0.1; done
grep -q "listening on https://" "$T/server.out" || { kill "$server_pid"; cat "$T/server.err"; fail "the unit's ExecStart did not start the server: $exec_line"; }
kill -TERM "$server_pid"; wait "$server_pid" || { cat "$T/server.err"; fail "the server did not stop cleanly on SIGTERM"; }
[[ -f "$T/var/server.db" && -f "$T/var/keys/master.key" ]] || fail "the server's state is not in StateDirectory"
echo "the unit's ExecStart: ok"

# The installed command on its own: a clean environment, run from elsewhere.
cd "$T"
E=(env -i PATH=/usr/bin:/bin HOME="$T")
expect_exit 0 "${E[@]}" "$S/bin/mlcapsule" --version
grep -q "^mlcapsule $VERSION" "$T/out" || fail "--version says $(cat "$T/out")"

# `mlcapsule lab` finds the installed mlcapsule-lab beside it.
if [[ -x "$S/bin/mlcapsule-lab" ]]; then
  expect_exit 0 "${E[@]}" "$S/bin/mlcapsule" lab --help
fi

# The installed mlcapsule starts the installed mlcapsule-core: air-gapped lease, guarded run.
t0=$(now)
cat > "$T/policy.json" <<'JSON'
{"version":1,"tee":{"accept":["software"]},"lease":{"max_queries":10,"max_days":1},"output":{"mode":"probabilities"}}
JSON
B=("${E[@]}" "$S/bin/mlcapsule")
expect_exit 0 "${B[@]}" keygen --out "$T/keys"
expect_exit 0 "${B[@]}" pack "$M/model.onnx" --key "$T/keys/provider.key" --policy "$T/policy.json" --out "$T/m.capsule"
expect_exit 0 "${B[@]}" lease request "$T/m.capsule" --state "$T/state" --out "$T/req.bin"
expect_exit 0 "${B[@]}" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" --request "$T/req.bin" \
  --license-id install-test --queries 5 --days 1 --out "$T/lease.bin"
expect_exit 0 "${B[@]}" lease install "$T/m.capsule" --state "$T/state" "$T/lease.bin"
expect_exit 0 "${B[@]}" run "$T/m.capsule" --state "$T/state" -i "$M/test_data_set_0/input_0.pb" -o "$T/guarded.npy"
expect_exit 0 "${B[@]}" infer "$M/model.onnx" -i "$M/test_data_set_0/input_0.pb" -o "$T/plain.npy"
cmp -s "$T/plain.npy" "$T/guarded.npy" || fail "the installed core answered differently from the engine"
took "installed mlcapsule + mlcapsule-core (keygen, pack, lease, run)" "$t0"

# `mlcapsule demo` from the installed tree finds its model in share/mlcapsule/demo (the theft
# stage is covered by the demo test; here it would only repeat it).
[[ -f "$S/share/mlcapsule/demo/victim-cnn.onnx" && -f "$S/share/mlcapsule/demo/victim.json" ]] ||
  fail "share/mlcapsule/demo lacks the demo's model or its lab configuration"
if [[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]]; then
  t0=$(now)
  expect_exit 0 "${B[@]}" demo --no-attack --strict --out "$T/demo"
  grep -q "$S/share/mlcapsule/demo/victim-cnn.onnx" "$T/out" || fail "the installed demo did not use the installed model"
  took "installed mlcapsule demo --no-attack" "$t0"
else
  echo "note: dataset-fashion-mnist is absent, the installed demo is not run"
fi

# A C application built against the installed headers and library alone; it lives elsewhere, so
# the library must find the installed core through its own location.
if command -v cc >/dev/null; then
  mkdir -p "$T/app"
  expect_exit 0 cc -std=c99 -I"$S/include" "$SRC/examples/c/classify.c" -L"$L" -lmlcapsule -o "$T/app/classify"
  (cd "$T/app" && env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$L" ./classify "$T/m.capsule" "$T/app-state" \
     "$M/test_data_set_0/input_0.pb" >"$T/out" 2>"$T/err"; echo $? > "$T/app-rc")
  # 3: no lease yet, so it asked the core for an evidence request (the core ran).
  [[ "$(cat "$T/app-rc")" == 3 && -s "$T/app/evidence-request.bin" ]] || fail "the C example with the installed library (exit $(cat "$T/app-rc"))"
fi
echo "install tree: ok"

[[ $DEB -eq 1 ]] || exit 0
# ---- The Debian packages. ----
command -v cpack >/dev/null && command -v dpkg-deb >/dev/null && command -v dpkg-shlibdeps >/dev/null ||
  { echo "SKIP: cpack, dpkg-deb or dpkg-shlibdeps (dpkg-dev) is absent"; exit 77; }
t0=$(now)
expect_exit 0 cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$T/pkgs"
took "cpack -G DEB" "$t0"
arch="$(dpkg --print-architecture)"
P="$T/pkgs/mlcapsule_${VERSION}_$arch.deb"
[[ -f "$P" ]] || fail "no $(basename "$P"): $(ls "$T/pkgs")"
dpkg-deb -I "$P" > "$T/info"; dpkg-deb -c "$P" > "$T/files"
for f in ./usr/bin/mlcapsule ./usr/bin/mlcapsule-core "libmlcapsule.so.$VERSION" "libmlcapsule.so.${VERSION%%.*} ->" \
         ./usr/include/mlcapsule/mlcapsule.h ./usr/lib/systemd/system/mlcapsule-server.service ./usr/share/doc/mlcapsule/README.md \
         ./usr/share/mlcapsule/demo/victim-cnn.onnx; do
  grep -qF -- "$f" "$T/files" || fail "mlcapsule.deb lacks $f"
done
if command -v help2man >/dev/null; then grep -qF ./usr/share/man/man1/mlcapsule.1.gz "$T/files" || fail "mlcapsule.deb lacks the man page"; fi
grep -qF ./usr/bin/mlcapsule-lab "$T/files" && fail "mlcapsule.deb must not hold the lab"
depends="$(sed -n 's/^ Depends: //p' "$T/info")"
for d in libc6 libsodium23 libssl3 libseccomp2; do
  grep -q "$d" <<< "$depends" || fail "mlcapsule Depends lacks $d (dpkg-shlibdeps): $depends"
done
grep -q "^ Package: mlcapsule$" "$T/info" && grep -q "^ Version: $VERSION" "$T/info" || fail "package name or version"
dpkg-deb -f "$P" Maintainer Section Priority | sed 's/^/  /'
PL="$T/pkgs/mlcapsule-lab_${VERSION}_$arch.deb"
if [[ -x "$BUILD/mlcapsule-lab" ]]; then
  [[ -f "$PL" ]] || fail "no $(basename "$PL")"
  dpkg-deb -c "$PL" | grep -qF ./usr/bin/mlcapsule-lab || fail "mlcapsule-lab.deb lacks the lab"
  ldep="$(dpkg-deb -f "$PL" Depends)"
  grep -q "libtorch" <<< "$ldep" || fail "mlcapsule-lab Depends lacks libtorch: $ldep"
  grep -q "mlcapsule (= $VERSION)" <<< "$ldep" || fail "mlcapsule-lab must depend on mlcapsule (= $VERSION): $ldep"
fi
ls -l "$T/pkgs"/*.deb | awk '{print "  " $5 " bytes  " $NF}' | sed "s|$T/pkgs/||"
echo "Depends (mlcapsule): $depends"
echo "debian packages: ok"
