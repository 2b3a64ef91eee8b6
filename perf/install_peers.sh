#!/usr/bin/env bash
# Install the outside tools Trident measures itself against, into <repo>/.tools/ (gitignored;
# TRIDENT_TOOLS_DIR overrides the folder):
#
#   .tools/perf-analyzer-venv  tritonclient[all]==2.48.0 (the last wheel that ships perf_analyzer)
#                              plus nvidia-cuda-runtime-cu12 for libcudart.so.12; Debian libb64-0d.
#   .tools/triton-venv         nvidia-pytriton==0.7.0 (ships tritonserver 2.51 and the Python
#                              backend), with the python_backend stub matching the venv's Python
#                              copied into tritonserver/backends/python/.
#                              With --with-onnxruntime also onnxruntime (the version Trident's
#                              .venv has, when there is one), for Python-backend models that run
#                              an ONNX Runtime session (perf/bench_onnx_overhead.py).
#
# Each peer gets a virtual environment of its own: tritonclient 2.48 pins numpy<2 and protobuf<5,
# which would clash with Trident's environment. Idempotent: a finished step is skipped, so running
# it again is cheap.
#
# Usage: perf/install_peers.sh [--python PYTHON] [--perf-analyzer-only] [--with-py-spy]
#                              [--with-onnxruntime]
#   --python PYTHON  interpreter the venvs are made from (default: python3)
#   --perf-analyzer-only
#                    skip the real Triton (the tests need only perf_analyzer; `make test` uses it)
#   --with-py-spy    also install py-spy (a sampling profiler) into the perf_analyzer venv, to see
#                    where a server's time goes during a benchmark
#   --with-onnxruntime
#                    also install onnxruntime into the Triton venv (ignored with
#                    --perf-analyzer-only)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${TRIDENT_TOOLS_DIR:-${repo_root}/.tools}"  # same override as perf/peers.py
python_bin="python3"
with_py_spy=0
with_onnxruntime=0
perf_analyzer_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) python_bin="$2"; shift 2 ;;
        --with-py-spy) with_py_spy=1; shift ;;
        --with-onnxruntime) with_onnxruntime=1; shift ;;
        --perf-analyzer-only) perf_analyzer_only=1; shift ;;
        *)
            echo "usage: $0 [--python PYTHON] [--perf-analyzer-only] [--with-py-spy]" \
                "[--with-onnxruntime]" >&2
            exit 2
            ;;
    esac
done

pa_venv="${tools_dir}/perf-analyzer-venv"
triton_venv="${tools_dir}/triton-venv"

log() { printf '[install_peers] %s\n' "$*"; }

as_root() {
    if [[ "$(id -u)" == "0" ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

make_venv() {
    local venv="$1"
    if [[ ! -x "${venv}/bin/python" ]]; then
        log "creating ${venv}"
        "${python_bin}" -m venv "${venv}"
    fi
}

install_libb64() {
    # perf_analyzer links libb64.so.0d; Debian/Ubuntu package it as libb64-0d.
    if ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
        return
    fi
    if ! command -v apt-get >/dev/null; then
        log "WARNING: libb64.so.0d missing and no apt-get; install libb64-0d by hand"
        return
    fi
    log "installing libb64-0d"
    # The package lists may be empty on a fresh image: update only when the package is not known.
    if ! apt-cache show libb64-0d >/dev/null 2>&1; then
        as_root apt-get update
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libb64-0d
}

install_perf_analyzer() {
    make_venv "${pa_venv}"
    if [[ -x "${pa_venv}/bin/perf_analyzer" ]] \
        && "${pa_venv}/bin/python" -c 'import nvidia.cuda_runtime' 2>/dev/null; then
        log "perf_analyzer already installed"
        return
    fi
    log "installing tritonclient[all]==2.48.0 and nvidia-cuda-runtime-cu12 into ${pa_venv}"
    "${pa_venv}/bin/python" -m pip install --quiet "tritonclient[all]==2.48.0" nvidia-cuda-runtime-cu12
}

install_py_spy() {
    if [[ -x "${pa_venv}/bin/py-spy" ]]; then
        log "py-spy already installed"
        return
    fi
    log "installing py-spy into ${pa_venv}"
    "${pa_venv}/bin/python" -m pip install --quiet py-spy
}

install_tritonserver() {
    make_venv "${triton_venv}"
    local pytriton_dir
    if ! pytriton_dir="$("${triton_venv}/bin/python" -c \
        'import os, pytriton; print(os.path.dirname(pytriton.__file__))' 2>/dev/null)"; then
        log "installing nvidia-pytriton==0.7.0 into ${triton_venv}"
        "${triton_venv}/bin/python" -m pip install --quiet "nvidia-pytriton==0.7.0"
        pytriton_dir="$("${triton_venv}/bin/python" -c \
            'import os, pytriton; print(os.path.dirname(pytriton.__file__))')"
    else
        log "nvidia-pytriton already installed"
    fi
    # The Python backend runs model.py in a stub process built for one Python version; pytriton
    # ships several and expects the matching one to be copied next to libtriton_python.so.
    local py_version stub_src stub_dst
    py_version="$("${triton_venv}/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    stub_src="${pytriton_dir}/tritonserver/python_backend_stubs/${py_version}/triton_python_backend_stub"
    stub_dst="${pytriton_dir}/tritonserver/backends/python/triton_python_backend_stub"
    if [[ ! -f "${stub_src}" ]]; then
        log "ERROR: no python_backend stub for Python ${py_version} in ${stub_src%/*/*}"
        exit 1
    fi
    if ! cmp -s "${stub_src}" "${stub_dst}"; then
        log "copying python_backend stub for Python ${py_version}"
        cp "${stub_src}" "${stub_dst}"
        chmod +x "${stub_dst}"
    fi
}

install_triton_onnxruntime() {
    # Same onnxruntime as Trident's own venv, so a comparison measures the servers, not two
    # ONNX Runtime releases; any release when that venv is missing.
    local wanted="" installed
    if [[ -x "${repo_root}/.venv/bin/python" ]]; then
        wanted="$("${repo_root}/.venv/bin/python" -c \
            'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)"
    fi
    installed="$("${triton_venv}/bin/python" -c \
        'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)"
    if [[ -n "${installed}" && ( -z "${wanted}" || "${installed}" == "${wanted}" ) ]]; then
        log "onnxruntime ${installed} already installed in ${triton_venv}"
        return
    fi
    log "installing onnxruntime${wanted:+==${wanted}} into ${triton_venv}"
    # numpy stays whatever pytriton installed (onnxruntime works with numpy 1.x and 2.x).
    "${triton_venv}/bin/python" -m pip install --quiet "onnxruntime${wanted:+==${wanted}}" numpy
}

check_tools() {
    local cudart_dir
    cudart_dir="$("${pa_venv}/bin/python" -c \
        'import os, nvidia.cuda_runtime as m; print(os.path.join(list(m.__path__)[0], "lib"))')"
    if ! LD_LIBRARY_PATH="${cudart_dir}:${LD_LIBRARY_PATH:-}" \
        "${pa_venv}/bin/perf_analyzer" --version >/dev/null 2>&1 \
        && ! LD_LIBRARY_PATH="${cudart_dir}:${LD_LIBRARY_PATH:-}" \
            "${pa_venv}/bin/perf_analyzer" --help >/dev/null 2>&1; then
        log "ERROR: perf_analyzer does not start; missing libraries:"
        LD_LIBRARY_PATH="${cudart_dir}:${LD_LIBRARY_PATH:-}" ldd "${pa_venv}/bin/perf_analyzer" \
            | grep 'not found' || true
        exit 1
    fi
    log "perf_analyzer: ${pa_venv}/bin/perf_analyzer (LD_LIBRARY_PATH needs ${cudart_dir})"
    if [[ "${perf_analyzer_only}" == 1 ]]; then
        return
    fi
    local server
    server="$("${triton_venv}/bin/python" -c \
        'import os, pytriton; print(os.path.join(os.path.dirname(pytriton.__file__), "tritonserver", "bin", "tritonserver"))')"
    log "tritonserver: ${server}"
}

mkdir -p "${tools_dir}"
start="$(date +%s)"
install_libb64
install_perf_analyzer
if [[ "${perf_analyzer_only}" == 0 ]]; then
    install_tritonserver
    if [[ "${with_onnxruntime}" == 1 ]]; then
        install_triton_onnxruntime
    fi
fi
if [[ "${with_py_spy}" == 1 ]]; then
    install_py_spy
fi
check_tools
log "done in $(($(date +%s) - start)) s"
