"""The installed llama.cpp is a portable build: no code compiled for the CPU of the machine that built it.

A native build (``-march=native``) on a CPU with AVX-512 and AMX compiles in AMX kernels that crashed
llama.cpp with a general protection fault on its first multi-token prompt, and a native wheel also
fails on an older CPU. These checks read how the library says it was built, not what this CPU has,
so they fail for a native build on any machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

import pytest

pytestmark = pytest.mark.llm

_SET = re.compile(r'^set\((GGML_[A-Z0-9_]+) "([^"]*)"\)$', re.M)


def _dist() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            raise  # `make test` installs the llm extra: missing it in CI is a failure
        pytest.skip("llama-cpp-python is not installed")


def ggml_build_options() -> dict[str, str]:
    """The GGML_* CMake options the wheel was built with, from the ggml-config.cmake it installs."""
    dist = _dist()
    configs = [f for f in dist.files or [] if str(f).replace("\\", "/").endswith("cmake/ggml/ggml-config.cmake")]
    assert configs, "llama-cpp-python installed no ggml-config.cmake: cannot tell how it was built"
    return dict(_SET.findall(configs[0].read_text()))


def test_ggml_was_built_without_native_or_avx512_amx_code() -> None:
    options = ggml_build_options()
    assert options.get("GGML_NATIVE") == "OFF", "llama.cpp was built with GGML_NATIVE (-march=native)"
    forced = {k: v for k, v in options.items() if re.match(r"GGML_(AVX512|AMX)", k) and v != "OFF"}
    assert not forced, f"AVX-512/AMX code compiled in: {forced}"
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert options.get("GGML_AVX2") == "ON"  # the portable baseline: x86-64 with AVX2/FMA/F16C


def test_llama_reports_no_avx512_or_amx_features() -> None:
    _dist()
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    compiled = set(re.findall(r"(\w+) = 1", info))  # ggml reports the instruction sets it was compiled with
    assert compiled, info
    assert not {f for f in compiled if f.startswith(("AVX512", "AMX"))}, info
