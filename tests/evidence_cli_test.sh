#!/usr/bin/env bash
# `mlcapsule evidence verify` end to end on the attestation vectors (../shared/attest-vectors,
# see its PROVENANCE.txt): the SGX and TDX quotes verify at 2025-07-01 with their TCB statuses,
# the SEV-SNP report is refused for its DEBUG policy bit unless the capsule policy allows debug,
# a mutated quote, expired collateral, a wrong measurement, a report data mismatch and software
# evidence without a policy are rejected (exit 1), and bad usage exits 2. Skips without vectors.
set -uo pipefail
BIN="$(realpath "$1")"; V="$2"; SRC="$(realpath "$3")"
if [[ ! -f "$V/dcap-qvl_sgx_quote.bin" ]]; then echo "SKIP: attestation vectors not found at $V"; exit 77; fi
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; [[ -f "$T/out" ]] && cat "$T/out"; [[ -f "$T/err" ]] && cat "$T/err"; exit 1; }
expect_exit() { local want="$1"; shift; "$@" >"$T/out" 2>"$T/err"; local got=$?; [[ $got -eq $want ]] || fail "exit $got, expected $want: $*"; }
NOW=1751328000
SGX=(--type sgx --evidence "$V/dcap-qvl_sgx_quote.bin" --collateral "$V/dcap-qvl_sgx_quote_collateral.json" --at $NOW)
TDX=(--type tdx --evidence "$V/dcap-qvl_tdx_quote_v4.bin" --collateral "$V/dcap-qvl_tdx_quote_collateral.json" --at $NOW)
SNP=(--type snp --evidence "$V/go-sev-guest_snp_attestation.bin" --certs "$V/go-sev-guest_vcek_milan.der" --at $NOW)

# The vectors, with their statuses.
expect_exit 0 "$BIN" evidence verify "${SGX[@]}"
grep -q '"accepted": true' "$T/out" || fail "sgx must be accepted"
grep -q '"tcb_status": "ConfigurationAndSWHardeningNeeded"' "$T/out" || fail "sgx TCB status"
grep -q 'INTEL-SA-00615' "$T/out" || fail "sgx advisories"
expect_exit 0 "$BIN" evidence verify "${TDX[@]}" --policy "$SRC/examples/policies/hardware-only.json"
grep -q '"tcb_status": "UpToDate"' "$T/out" || fail "tdx TCB status"

# SNP: DEBUG is set in the vector's guest policy.
expect_exit 1 "$BIN" evidence verify "${SNP[@]}"
grep -q '"accepted": false' "$T/out" || fail "snp must be rejected"
grep -q 'policy: debug enclave refused' "$T/out" || fail "snp must be rejected for debug"
cat > "$T/debug.json" <<'JSON'
{"version":1,"tee":{"accept":["snp"],"allow_debug":true,
 "measurements":{"snp":["b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"]}}}
JSON
RD=0102030405$(printf '0%.0s' {1..118})
expect_exit 0 "$BIN" evidence verify "${SNP[@]}" --policy "$T/debug.json" --report-data "$RD"

# Rejections name the failed check.
cp "$V/dcap-qvl_sgx_quote.bin" "$T/mutated.bin"
printf '\x00' | dd of="$T/mutated.bin" bs=1 seek=368 conv=notrunc status=none
expect_exit 1 "$BIN" evidence verify --type sgx --evidence "$T/mutated.bin" --collateral "$V/dcap-qvl_sgx_quote_collateral.json" --at $NOW
grep -q '"error": "quote_signature' "$T/out" || fail "mutated report data must fail the quote signature"
expect_exit 1 "$BIN" evidence verify --type sgx --evidence "$V/dcap-qvl_sgx_quote.bin" --collateral "$V/dcap-qvl_sgx_quote_collateral.json" --at 1752969600
grep -q '"error": "collateral_expired' "$T/out" || fail "2025-07-20 must be past the collateral"
expect_exit 1 "$BIN" evidence verify "${SGX[@]}" --report-data "$(printf 'ab%.0s' {1..64})"
grep -q 'report data does not match' "$T/out" || fail "report data mismatch"
echo '{"version":1,"tee":{"accept":["sgx"],"measurements":{"sgx":["'"$(printf 'a%.0s' {1..64})"'"]}}}' > "$T/other.json"
expect_exit 1 "$BIN" evidence verify "${SGX[@]}" --policy "$T/other.json"
grep -q 'is not on the allow-list for sgx' "$T/out" || fail "measurement allow-list"
echo '{"version":1,"tee":{"accept":["sgx"],"tcb_statuses":["UpToDate"]}}' > "$T/strict.json"
expect_exit 1 "$BIN" evidence verify "${SGX[@]}" --policy "$T/strict.json"
grep -q 'TCB status ConfigurationAndSWHardeningNeeded is not accepted' "$T/out" || fail "TCB status"

# Software evidence: accepted only under a policy that names software.
{ printf 'MLCSWEV1'; head -c 96 /dev/zero; } > "$T/software.bin"
expect_exit 1 "$BIN" evidence verify --type software --evidence "$T/software.bin"
echo '{"version":1,"tee":{"accept":["software"]}}' > "$T/software.json"
expect_exit 0 "$BIN" evidence verify --type software --evidence "$T/software.bin" --policy "$T/software.json"

# Usage errors.
expect_exit 2 "$BIN" evidence verify --type sgx --evidence "$V/dcap-qvl_sgx_quote.bin"
expect_exit 2 "$BIN" evidence verify "${SGX[@]}" --tpm-ek-ca "$V/dcap-qvl_sgx_quote.bin"
# TPM evidence is verified now (server/evidence/tpm_test.cc covers it); an SGX quote is not any.
expect_exit 1 "$BIN" evidence verify --type tpm --evidence "$V/dcap-qvl_sgx_quote.bin"
grep -q '"error": "parse_error: tpm evidence does not start with MLCTPMEV' "$T/out" || fail "tpm parse"
expect_exit 2 "$BIN" evidence verify "${SGX[@]}" --report-data 1234
expect_exit 2 "$BIN" evidence verify "${SNP[@]}" --collateral "$V/dcap-qvl_sgx_quote_collateral.json"
echo "evidence cli: ok"
