#!/bin/bash
# Runs every unit test binary and every end-to-end script against the given build dir.
# Usage: tests/run.sh BUILD_DIR [PATTERN]. Ends with "N passed, N failed".
set -u
BUILD=${1:-build-san}
PATTERN=${2:-}
cd "$(dirname "$0")/.."
export BUILD=$PWD/$BUILD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
LOGDIR=$(mktemp -d /tmp/blockd-tests.XXXXXX)
pass=0
fail=0
failed=()
run() {
	local name=$1
	shift
	local start=$SECONDS
	if "$@" >"$LOGDIR/$name.log" 2>&1; then
		pass=$((pass + 1))
		echo "PASS $name ($((SECONDS - start))s)"
	else
		fail=$((fail + 1))
		failed+=("$name")
		echo "FAIL $name ($((SECONDS - start))s); last lines of $LOGDIR/$name.log:"
		tail -n 40 "$LOGDIR/$name.log" | sed 's/^/    /'
	fi
}
for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	name=$(basename "$t")
	[[ -z "$PATTERN" || "$name" == *$PATTERN* ]] || continue
	run "$name" "$t"
done
for t in tests/e2e/[0-9]*.sh; do
	[ -f "$t" ] || continue
	name=e2e_$(basename "$t" .sh)
	[[ -z "$PATTERN" || "$name" == *$PATTERN* ]] || continue
	run "$name" bash "$t"
done
echo
[ "$fail" -eq 0 ] || echo "failed: ${failed[*]} (logs in $LOGDIR)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
