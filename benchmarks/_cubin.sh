# Sourced by ptxas_summary.sh and cubin_text_hashes.sh, after `cd` to the repository root: one
# place for how a CUDA source is compiled to an sm_90 cubin without a GPU, so that both scripts
# look at the same machine code, and for their common arguments (SRC [PYTHON]). Sourcing sets
#   src, py   the script's arguments (PYTHON: one with jax, for the XLA FFI headers; default python3)
#   cubin     a temporary file, removed when the script exits
# and defines
#   build_cubin SRC PYTHON OUT [nvcc args...]
src=$1; py=${2:-python3}
cubin=$(mktemp --suffix .cubin)
trap 'rm -f "$cubin"' EXIT
build_cubin() {
  local src=$1 py=$2 out=$3; shift 3
  local inc
  inc=$("$py" -c "import jax; print(jax.ffi.include_dir())")
  nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -diag-suppress=940,2473,177 -I csrc -I "$inc" \
    "$@" -cubin "$src" -o "$out"
}
