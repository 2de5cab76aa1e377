"""Compile the Triton kernels for an H100 (sm_90a) down to a cubin, without a GPU.

The interpreter does not type-check like the compiler (loop-carried types, constexpr use, the
IEEE sqrt/division intrinsics), so a kernel can pass every interpreter test and still fail to
compile. Run by `test_kernels_triton.py::test_kernels_compile_for_sm90` in a process without
`TRITON_INTERPRET`; prints one line per kernel with its registers and spills (from ptxas).
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from token_compressor.kernels import triton_scores as ts

assert not ts.kernels_are_interpreted(), "run without TRITON_INTERPRET"

F32 = "*fp32"
KERNELS = {
    ts._channel_stats_kernel: (
        dict(x_ptr="*bf16", mean_ptr=F32, m2_ptr=F32, M="i32", D="i32", stride_m="i32", rows_per_program="i32"),
        dict(BLOCK_M=64, BLOCK_D=128),
    ),
    ts._norms_frame_sums_kernel: (
        dict(x_ptr="*bf16", w_ptr=F32, sq_ptr=F32, inv_ptr=F32, part_ptr=F32, N="i32", D="i32", stride_m="i32", eps="fp32"),
        dict(BLOCK_M=16, BLOCK_D=256),
    ),
    ts._scores_kernel: (
        dict(x_ptr="*bf16", g_ptr=F32, gt_ptr=F32, g_sq_ptr=F32, gt_sq_ptr=F32, sq_ptr=F32, inv_ptr=F32,
             s_video_ptr=F32, s_frame_ptr=F32, N="i32", D="i32", stride_m="i32"),
        dict(BLOCK_M=16, BLOCK_D=256),
    ),
}
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"

for fn, (signature, constants) in KERNELS.items():
    names = list(signature) + list(constants)
    signature = dict(signature, **{k: "constexpr" for k in constants})
    src = ASTSource(fn, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert compiled.asm["cubin"], fn.__name__
    ptx = compiled.asm["ptx"]
    if fn is ts._norms_frame_sums_kernel:  # the inverse norm must use IEEE-rounded sqrt and division
        assert "sqrt.rn.f32" in ptx and "div.rn.f32" in ptx, "approximate sqrt/division in the norm"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        Path(path).write_text(ptx)
        info = subprocess.run([str(PTXAS), "-arch=sm_90a", "-v", path, "-o", os.devnull],
                              capture_output=True, text=True, check=True).stderr
    usage = [line.split("info    :")[-1].strip() for line in info.splitlines() if "Used" in line or "spill" in line]
    print(fn.__name__, "|", " | ".join(usage))
    assert "0 bytes spill stores" in info, f"{fn.__name__} spills registers: {info}"
sys.exit(0)
