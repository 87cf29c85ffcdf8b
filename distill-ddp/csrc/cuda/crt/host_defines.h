// Host-only stand-in for the CUDA compiler's crt/host_defines.h (see ../README.md): the qualifiers
// the runtime headers put on declarations. On the host side, execution-space qualifiers mean
// nothing, alignment is GCC's attribute, and the calling convention is the platform's default.
#pragma once

#if defined(__CUDACC__)
#error "distill-ddp's crt/host_defines.h is for host-only compiles; use a CUDA toolkit's (CUDA_HOME) with nvcc"
#endif

// Execution spaces and memory spaces: meaningful to nvcc only.
#define __host__
#define __device__
#define __global__
#define __shared__
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)
#define __cudart_builtin__
#define __device_builtin__
#define __device_builtin_texture_type__
#define __device_builtin_surface_type__

// Inlining and other function attributes, as GCC and Clang spell them.
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __no_return__ __attribute__((noreturn))
#define __noreturn__ __attribute__((noreturn))
#define __thread__ __thread
#define __import__
#define __export__
#define __cdecl
#define __annotate__(a) __attribute__((a))
#define __location__(a) __annotate__(a)
#define __specialization_static

// Alignment of the vector and builtin types.
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(a) __align__(a)

// The runtime API's calling convention (only Windows has another).
#define CUDARTAPI
#define CUDARTAPI_CDECL
