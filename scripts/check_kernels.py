#!/usr/bin/env python3
"""Compiles every variant of crates/core/src/kernels/ (the qmm_rows and
qmm_gather kernels, the shared-rows form qmm_rows.rs generates, and the
attend_rows kernel) with NVRTC, wrapped the way MLX's cuda_kernel wraps a body
(the generated signature, the template arguments as constants), for sm_80 and
sm_90. The variants are the template arguments crates/core/src/qmm_rows.rs can
pick: T bf16/f16; MXFP4 (4 bits, group 32) or affine 4/8 bits in groups of
32/64/128; V 1/2/4 (as K allows the group); NT 1 and 8 (the fewest and most
row tiles: NT only sets loop counts); PAIRED for 4-bit affine weights (as
qmm_rows.rs sets it); X_PER_ROW 1, or 4 for the experts' form (GPT-OSS's picks
a token). The attend_rows kernel: T bf16/f16, each (D, G) attend_rows.rs
takes at its edges (D 64 and 128; G 1 and the most each D allows, and the
models' 4 and 8), with and without sinks. Exits 1 on the first failure,
printing NVRTC's log.

Usage: check_kernels.py NVRTC_DIR   (where NVIDIA's nvrtc and runtime wheels are installed)
"""

import ctypes
import itertools
import sys
import time
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "crates" / "core" / "src" / "kernels"

# What MLX's generated source provides around a body: fixed-width integers,
# the Shape type of its `<name>_shape` arguments, the namespace.
PRELUDE = """
typedef unsigned int uint32_t;
typedef unsigned char uint8_t;
template <typename T, int N> struct fixed_array {
  T v[N];
  __device__ const T& operator[](int i) const { return v[i]; }
};
namespace mlx { namespace core { namespace cu { using Shape = fixed_array<int, 8>; } } }
"""


def several_body(count, product, n0, extra=""):
    """A body over `count` matrices read by the same rows, block row y for
    matrix y: `product` (its template) on each, from feature `n0`."""
    cases = "".join(
        f"  case {i}:\n    if (n0 < w{i}_shape[0]) {{\n      {product}(\n        "
        f"x, w{i}, scales{i}, biases{i}, out{i}, x_shape[0], x_shape[1], w{i}_shape[0], n0"
        f"{extra});\n    }}\n    break;\n" for i in range(count))
    return f"const int n0 = {n0};\nswitch (blockIdx.y) {{\n" + cases + "}\n"


def shared_body(count):
    """The shared-rows form's body for `count` matrices, as
    crates/core/src/qmm_rows.rs generates it (shared_body)."""
    return several_body(count, "qmm_rows::product<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, STAGES>",
                        "blockIdx.x * 16")


def wide_body(count):
    """The wide form's body for `count` matrices, as crates/core/src/qmm_rows.rs
    generates it (wide_body)."""
    return several_body(
        count, "qmm_rows::product_wide<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, FT>",
        "blockIdx.x * 16 * FT", ",\n        blockIdx.z, gridDim.z")


def sum_splits_body(count):
    """The split sums' body for `count` matrices (qmm_rows.rs, sum_splits_body)."""
    cases = "".join(
        f"  case {i}:\n    qmm_sum_splits::add(partial{i}, out{i}, partial{i}_shape[0],\n"
        f"      (size_t)partial{i}_shape[1] * partial{i}_shape[2], i);\n    break;\n"
        for i in range(count))
    return ("const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
            "switch (blockIdx.y) {\n" + cases + "}\n")


def sum_splits_source(header, count, t):
    """The split sums' kernel for `count` matrices wrapped as MLX wraps it."""
    inputs = []
    for i in range(count):
        inputs += [f"const float* partial{i}", f"const __grid_constant__ Shape partial{i}_shape"]
    outputs = [f"{t}* out{i}" for i in range(count)]
    return (PRELUDE + header + "namespace mlx { namespace core { namespace cu {\n"
            + "__global__ void kernel(" + ", ".join(inputs + outputs) + ") {\n"
            + f"using T = {t};\n" + sum_splits_body(count) + "\n}\n}}}\n")


def source(header, body, form, t, scales, bits, group, v, nt, mxfp4, x_per_row, ft=1,
           split=False, stages=1):
    """A body wrapped as MLX wraps it; `form` is "matrix", "experts", "sharedN" or
    "wideN" (with FT tiles a warp; SPLIT: float outputs, the splits' sums)."""
    several = form.startswith("shared") or form.startswith("wide")
    matrices = int(form.lstrip("sharedwi")) if several else 1
    inputs = [f"const {t}* x", "const __grid_constant__ Shape x_shape"]
    for i in range(matrices):
        suffix = str(i) if several else ""
        inputs += [f"const uint32_t* w{suffix}", f"const __grid_constant__ Shape w{suffix}_shape",
                   f"const {scales}* scales{suffix}", f"const {scales}* biases{suffix}"]
    if form == "experts":
        inputs += ["const uint32_t* experts", "const __grid_constant__ Shape experts_shape"]
    out_type = "float" if split else t
    outputs = ([f"{out_type}* out{i}" for i in range(matrices)] if several
               else [f"{t}* out"])
    constants = (f"constexpr int BITS = {bits}; constexpr int GROUP = {group}; "
                 f"constexpr int V = {v}; constexpr int NT = {nt}; constexpr int WARPS = 8; "
                 f"constexpr int X_PER_ROW = {x_per_row}; "
                 f"constexpr bool MXFP4 = {'true' if mxfp4 else 'false'}; "
                 f"constexpr bool PAIRED = {'true' if bits == 4 and not mxfp4 else 'false'}; "
                 f"constexpr int FT = {ft}; constexpr int STAGES = {stages}; "
                 f"constexpr bool SPLIT = {'true' if split else 'false'}; "
                 f"using T = {t};")
    return (PRELUDE + header + "namespace mlx { namespace core { namespace cu {\n"
            + "__global__ void kernel(" + ", ".join(inputs + outputs) + ") {\n"
            + constants + "\n" + body + "\n}\n}}}\n")


def attend_source(header, body, t, d, g, sinks):
    """The attend_rows body wrapped as MLX wraps it (sinks of type float)."""
    inputs = [f"const {t}* q", "const __grid_constant__ Shape q_shape"]
    for name in ("store_k", "store_v", "recent_k", "recent_v"):
        inputs += [f"const {t}* {name}", f"const __grid_constant__ Shape {name}_shape"]
    inputs += ["const int* spans", "const float* sinks", f"{t}* out"]
    constants = (f"constexpr int D = {d}; constexpr int G = {g}; constexpr int C = 2; "
                 f"constexpr bool SINKS = {'true' if sinks else 'false'}; "
                 f"constexpr int SCALE_BITS = 1040187392; using T = {t};")
    return (PRELUDE + header + "namespace mlx { namespace core { namespace cu {\n"
            + "__global__ void kernel(" + ", ".join(inputs) + ") {\n"
            + constants + "\n" + body + "\n}\n}}}\n")


def compile_or_exit(nvrtc, include, text, arch, label):
    program = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(program), text.encode(), b"kernel.cu", 0, None, None)
    options = [f"--gpu-architecture={arch}".encode(), b"-std=c++17",
               f"-I{include}".encode(), b"-default-device"]
    status = nvrtc.nvrtcCompileProgram(
        program, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    if status != 0:
        print(f"check-kernels: {label} {arch} does not compile:\n{log.value.decode()}")
        sys.exit(1)


def main():
    root = Path(sys.argv[1])
    nvrtc = ctypes.CDLL(str(next((root / "nvidia" / "cuda_nvrtc" / "lib").glob("libnvrtc.so.*"))))
    include = root / "nvidia" / "cuda_runtime" / "include"
    count, start = 0, time.time()
    attend_header = (KERNELS / "attend_rows_header.cuh").read_text()
    attend_body = (KERNELS / "attend_rows_body.cu").read_text()
    for t, (d, g), sinks, arch in itertools.product(
            ("__nv_bfloat16", "__half"), ((64, 1), (64, 8), (64, 16), (128, 1), (128, 4), (128, 8)),
            (False, True), ("sm_80", "sm_90")):
        compile_or_exit(nvrtc, include, attend_source(attend_header, attend_body, t, d, g, sinks),
                        arch, f"attend_rows T={t} D={d} G={g} SINKS={sinks}")
        count += 1
    header = (KERNELS / "qmm_rows_header.cuh").read_text()
    bodies = {"matrix": (KERNELS / "qmm_rows_body.cu").read_text(),
              "experts": (KERNELS / "qmm_gather_body.cu").read_text(),
              "shared2": shared_body(2), "shared3": shared_body(3)}
    formats = [(True, 4, 32)] + [(False, bits, group) for bits in (4, 8) for group in (32, 64, 128)]
    for form, t, (mxfp4, bits, group), v, nt, arch in itertools.product(
            bodies, ("__nv_bfloat16", "__half"), formats, (1, 2, 4), (1, 8),
            ("sm_80", "sm_90")):
        # The shared-rows form repeats the one-matrix product (compiled above
        # in every variant): Hopper, bfloat16, three formats, and two
        # matrices for one.
        if form.startswith("shared") and (
                arch == "sm_80" or t != "__nv_bfloat16"
                or (bits, group) not in ((4, 64), (4, 32), (8, 64))
                or (form == "shared2" and (bits, group, mxfp4) != (4, 64, False))):
            continue
        # V 1 needs K % 64 != 0 (groups of 32 only), V 2 K % 128 != 0 (groups of 32 or 64).
        if (v == 1 and group != 32) or (v == 2 and group == 128):
            continue
        # Only the Hopper build for most shapes; every shape for one format on Ampere.
        if arch == "sm_80" and (bits, group, mxfp4) not in ((4, 64, False), (4, 32, True)):
            continue
        for x_per_row in ((1, 4) if form == "experts" else (1,)):
            text = source(header, bodies[form], form, t, "uint8_t" if mxfp4 else t, bits,
                          group, v, nt, mxfp4, x_per_row)
            compile_or_exit(nvrtc, include, text, arch,
                            f"{form} T={t} MXFP4={mxfp4} BITS={bits} GROUP={group} V={v} "
                            f"NT={nt} X_PER_ROW={x_per_row}")
            count += 1
    # More chunks of weights in flight (MLX_HARMONY_QMM_STAGES): the one-matrix
    # and experts' forms on Hopper in bfloat16, three formats, the fewest and
    # most row tiles.
    for form, stages, (mxfp4, bits, group), nt in itertools.product(
            ("matrix", "experts"), (2, 3, 4), ((False, 4, 64), (True, 4, 32), (False, 8, 64)),
            (1, 8)):
        v = 4 if group != 32 else 2
        text = source(header, bodies[form], form, "__nv_bfloat16", "uint8_t" if mxfp4
                      else "__nv_bfloat16", bits, group, v, nt, mxfp4, 1, stages=stages)
        compile_or_exit(nvrtc, include, text, "sm_90",
                        f"{form} STAGES={stages} MXFP4={mxfp4} BITS={bits} GROUP={group} NT={nt}")
        count += 1
    # The wide form (MLX_HARMONY_QMM=wide): each tile count it takes with the
    # row tiles it takes them at (FT * NT <= 8), split or not, one to three
    # matrices; every format on Hopper in bfloat16, one format otherwise.
    for (mxfp4, bits, group), t, (nt, ft), split, matrices, arch in itertools.product(
            formats, ("__nv_bfloat16", "__half"), ((1, 4), (2, 4), (4, 2), (8, 1)),
            (False, True), (1, 2, 3), ("sm_80", "sm_90")):
        if (arch == "sm_80" or t != "__nv_bfloat16") and (bits, group, mxfp4) != (4, 64, False):
            continue
        if matrices != 1 and (nt, ft) not in ((2, 4),):
            continue
        v = 4 if group != 32 or bits == 8 else 2
        text = source(header, wide_body(matrices), f"wide{matrices}", t,
                      "uint8_t" if mxfp4 else t, bits, group, v, nt, mxfp4, 1, ft, split)
        compile_or_exit(nvrtc, include, text, arch,
                        f"wide{matrices} T={t} MXFP4={mxfp4} BITS={bits} GROUP={group} V={v} "
                        f"NT={nt} FT={ft} SPLIT={split}")
        count += 1
    sums_header = (KERNELS / "qmm_sum_splits_header.cuh").read_text()
    for matrices, t, arch in itertools.product((1, 2, 3), ("__nv_bfloat16", "__half"),
                                               ("sm_80", "sm_90")):
        compile_or_exit(nvrtc, include, sum_splits_source(sums_header, matrices, t), arch,
                        f"sum_splits{matrices} T={t}")
        count += 1
    print(f"check-kernels: {count} kernel variants compiled with NVRTC ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
