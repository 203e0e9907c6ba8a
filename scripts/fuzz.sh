#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the parsers that read outside input. The targets live
# in the separate package Fuzz/ (Fuzz/Sources/RelayFuzz/), built with
# -sanitize=fuzzer,address into Fuzz/.build-fuzz, so the main build is untouched.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh TARGET [SECONDS] one target (default 60 s)
#   scripts/fuzz.sh all SECONDS      every target, SECONDS each
#   scripts/fuzz.sh --smoke          every target for a few seconds (CI: about a minute in all)
#   scripts/fuzz.sh --list           the target names
#   scripts/fuzz.sh --build          build only
#
# Seeds: Fuzz/Corpus/<target>/ (committed). What a run learns goes to
# Fuzz/.build-fuzz/corpus/<target>/ and is reused by the next run. A crashing, hanging,
# leaking or memory-hungry input is written to Fuzz/Crashes/<target>/ (not committed) and the
# script exits non-zero, printing the command that replays the input.
# Needs only the Swift toolchain (swift.org's Linux toolchains ship the libFuzzer runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# name:max_len (bytes): small enough to keep executions fast, large enough for real inputs.
targets=(
  tarball:16384
  ignore:2048
  semver:512
  oci-route:512
  gitlab-webhook:4096
  flux-event:40000
  flux-status:40000
  status-journal:4096
  relay-config:4096
  agent-config:4096
  bundle:16384
)
smoke_seconds=5

names() { for entry in "${targets[@]}"; do echo "${entry%%:*}"; done; }
max_len() { for entry in "${targets[@]}"; do [ "${entry%%:*}" = "$1" ] && echo "${entry##*:}"; done; }

mode=run selected=all seconds=60
case "${1:-}" in
  --list) names; exit 0 ;;
  --build) mode=build ;;
  --smoke) seconds=$smoke_seconds ;;
  ""|all) seconds=${2:-60} ;;
  -*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  *)
    selected=$1; seconds=${2:-60}
    if [ -z "$(max_len "$selected")" ]; then
      echo "fuzz: unknown target '$selected'; targets: $(names | tr '\n' ' ')" >&2
      exit 2
    fi
    ;;
esac

swift_bin=$(command -v swift) || { echo "fuzz: no Swift toolchain on PATH" >&2; exit 1; }
toolchain_lib=$(dirname "$(readlink -f "$swift_bin")")/../lib/swift/clang/lib
if ! ls "$toolchain_lib"/*/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
  echo "fuzz: this Swift toolchain has no libFuzzer runtime under $toolchain_lib;" \
       "use a swift.org toolchain (Linux, or the macOS one from swift.org rather than Xcode's)" >&2
  exit 1
fi

scratch=Fuzz/.build-fuzz
build_flags=(--package-path Fuzz --scratch-path "$scratch" -c debug
             -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
started=$(date +%s)
echo "fuzz: building the fuzz targets (a first build compiles every dependency with the sanitizers)"
# SwiftPM does not notice files added to the root package (a path dependency here) without
# re-reading this manifest.
touch Fuzz/Package.swift
mkdir -p "$scratch"
build_status=0
swift build "${build_flags[@]}" > "$scratch/build.log" 2>&1 || build_status=$?
grep -E "error|warning: unre|Compiling RelayFuzz|Build complete" "$scratch/build.log" || true
binary="$(swift build "${build_flags[@]}" --show-bin-path)/RelayFuzz"
# A failed build must not fuzz the binary an earlier build left behind.
[ "$build_status" -eq 0 ] && [ -x "$binary" ] || { echo "fuzz: the build failed (see $scratch/build.log)" >&2; exit 1; }
echo "fuzz: built in $(( $(date +%s) - started )) s: $binary"
[ "$mode" = build ] && exit 0

run_target() {
  local name=$1 seconds=$2
  local work="$scratch/corpus/$name" crashes="Fuzz/Crashes/$name" log="$scratch/logs/$name.log"
  mkdir -p "$work" "$crashes" "$(dirname "$log")"
  local status=0
  # The first corpus directory receives new inputs; the committed seeds are only read.
  # Leaks count as failures (LeakSanitizer; Fuzz/lsan.supp lists the toolchain's own). The Swift
  # runtime's backtracer is off: it would fight AddressSanitizer over a crashing process.
  RELAY_FUZZ_TARGET=$name SWIFT_BACKTRACE=enable=no LSAN_OPTIONS="suppressions=$root/Fuzz/lsan.supp" \
    "$binary" "$work" "Fuzz/Corpus/$name" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$name")" \
    -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1 || status=$?
  local executed average line
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  average=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  local cov ft corpus
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
  corpus=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$line")
  if [ "$status" -eq 0 ]; then
    printf 'fuzz: %-15s ok     %ss  %s execs  %s exec/s  cov %s  ft %s  corpus %s\n' \
      "$name" "$seconds" "${executed:-?}" "${average:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}"
    return 0
  fi
  local artifact
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  printf 'fuzz: %-15s FAILED (exit %s) after %s execs; input: %s\n' "$name" "$status" "${executed:-?}" "${artifact:-none written}"
  grep -E "Fatal error|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|SUMMARY" "$log" | head -5 | sed 's/^/    /'
  echo "    log: $log"
  echo "    replay: RELAY_FUZZ_TARGET=$name SWIFT_BACKTRACE=enable=no $binary ${artifact:-<input>}"
  return 1
}

failed=0
run_started=$(date +%s)
if [ "$selected" = all ]; then
  for name in $(names); do run_target "$name" "$seconds" || failed=1; done
else
  run_target "$selected" "$seconds" || failed=1
fi
echo "fuzz: fuzzing took $(( $(date +%s) - run_started )) s"
exit $failed
