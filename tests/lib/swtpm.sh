# Shell helpers for tests and benchmarks that need a software TPM (swtpm): manufacture one with
# EK certificates from its own local CA, start it on a free loopback port pair, stop it by PID.
# The caller sets WORK (a scratch directory) and declares `declare -A TPM_PIDS=()`, and stops
# every entry of TPM_PIDS on exit. Source it: source tests/lib/swtpm.sh
stop_pid() {  # stop_pid PID: SIGTERM, then SIGKILL after 2 s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
free_port_pair() {  # a port P with P and P+1 free on 127.0.0.1
  python3 - <<'PY'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    try:
        b = socket.socket(); b.bind(("127.0.0.1", p + 1)); b.close(); a.close(); print(p); break
    except OSError:
        a.close()
PY
}

# --- a manufactured software TPM: EK certificates from our own local CA ---------------------
make_tpm() {  # make_tpm NAME: TPM state and its CA under $WORK/NAME
  local dir="$WORK/$1"
  mkdir -p "$dir/ca" "$dir/state"
  cat > "$dir/swtpm-localca.conf" <<EOF
statedir = $dir/ca
signingkey = $dir/ca/signkey.pem
issuercert = $dir/ca/issuercert.pem
certserial = $dir/ca/certserial
EOF
  printf -- '--platform-manufacturer MLCapsule\n--platform-version 2.1\n--platform-model test\n' \
    > "$dir/swtpm-localca.options"
  cat > "$dir/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
active_pcr_banks = sha256
EOF
  swtpm_setup --tpm2 --tpmstate "$dir/state" --create-ek-cert --create-platform-cert \
    --config "$dir/swtpm_setup.conf" --logfile "$dir/setup.log" >/dev/null 2>&1 ||
    { echo "swtpm_setup failed"; cat "$dir/setup.log"; exit 1; }
  cat "$dir/ca/swtpm-localca-rootca-cert.pem" "$dir/ca/issuercert.pem" > "$dir/ek-ca.pem"
}
start_tpm() {  # start_tpm NAME: swtpm on a free port pair; sets TPM_SPEC
  local dir="$WORK/$1" port
  for _ in 1 2 3 4 5; do
    port=$(free_port_pair)
    swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
      --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
      --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
      --flags not-need-init,startup-clear --log "file=$dir/swtpm.log,level=1" &
    TPM_PIDS[$1]=$!
    for _ in $(seq 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        TPM_SPEC="tcp:127.0.0.1:$port"
        return 0
      fi
      kill -0 "${TPM_PIDS[$1]}" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "${TPM_PIDS[$1]}"
  done
  echo "swtpm did not start"; cat "$dir/swtpm.log"; exit 1
}
stop_tpm() { stop_pid "${TPM_PIDS[$1]}"; unset "TPM_PIDS[$1]"; }
