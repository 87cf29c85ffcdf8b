// Host-only stand-in for the CUDA compiler's crt/host_config.h (see ../README.md). The real file
// checks the host compiler's version for nvcc; a plain host compile has nothing to check.
#pragma once

#if defined(__CUDACC__)
#error "distill-ddp's crt/host_config.h is for host-only compiles; use a CUDA toolkit's (CUDA_HOME) with nvcc"
#endif
