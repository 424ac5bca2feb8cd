#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (see fuzz/README.md).
#
#   bash fuzz/run.sh                 every target for FUZZ_TIME seconds (default 60)
#   bash fuzz/run.sh --smoke         every target for FUZZ_SMOKE_TIME seconds (default 15): CI
#   bash fuzz/run.sh token_file ...  only these targets
#
# Installs cargo-fuzz when missing; needs the nightly toolchain (installed when missing).
# The build is cached outside the repository, in ~/.cache/vx11/fuzz-<nightly version>, and
# so is the corpus each run grows (the committed seeds in fuzz/seeds/ are only read). Exits
# non-zero when a target crashes; the input is under fuzz/artifacts/<target>/ and the command
# to replay it is printed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

time_each="${FUZZ_TIME:-60}"
targets=()
for arg in "$@"; do
  case "$arg" in
    --smoke) time_each="${FUZZ_SMOKE_TIME:-15}" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

nightly="$(rustup run nightly rustc --version | tr -cs 'A-Za-z0-9.' '-' | sed 's/-$//')"
cache="${VX11_FUZZ_CACHE:-$HOME/.cache/vx11/fuzz-$nightly}"
export CARGO_TARGET_DIR="$cache/target"
mkdir -p "$cache/corpus"

if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "fuzz: building ${#targets[@]} targets (cache $CARGO_TARGET_DIR)" >&2
cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
  corpus="$cache/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  seeds="fuzz/seeds/$target"
  [ -d "$seeds" ] || seeds=""
  echo "fuzz: $target for ${time_each}s" >&2
  # The first directory receives what the run finds; the seeds are only read.
  if ! cargo +nightly fuzz run "$target" "$corpus" $seeds -- \
      -max_total_time="$time_each" -print_final_stats=1 -close_fd_mask=1 \
      -timeout=10 -rss_limit_mb=2048 2>"$cache/$target.log"; then
    tail -n 40 "$cache/$target.log" >&2
    echo "fuzz: $target FAILED; replay: cargo +nightly fuzz run $target fuzz/artifacts/$target/<file>" >&2
    failed+=("$target")
  else
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$cache/$target.log" \
      | sed "s/^/fuzz: $target /" >&2 || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${time_each}s each without a crash" >&2
