# Sourced by gpu_run.sh and ab_run.sh on the GPU machine (no network): the peers' wheels from
# .whl/ into /tmp/site, and the environment of every run and build there (sm_90 only).
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
export BATTERIES_JAX_CUDA=ON CMAKE_CUDA_ARCHITECTURES=90
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
