// The two CUDA spellings the .cu files share that plain C++ cannot parse (dynamic shared memory, the
// <<<>>> launch), plus the seam of the CPU emulation: tests/cuda_emu compiles these sources as C++
// with FASTWIN_CPU_EMULATION defined, its fw_cuda_emu.h supplying the CUDA built-ins and the few
// PTX instructions (ldmatrix, mma, cp.async, ex2), so the kernels' logic is tested against the
// reference on machines without a GPU. Normal builds never see the emulator.
#pragma once

#if defined(FASTWIN_CPU_EMULATION)
#include "fw_cuda_emu.h"
#else
#define FW_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define FW_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif
