// A C ABI over libtorch's c10d: a TCPStore rendezvous, Gloo (and, when compiled in, NCCL) process
// groups, and the three collectives data-parallel training needs. The Rust side (src/ffi.rs) is the
// only caller.
//
// Conventions:
// - Every function that can fail returns a status (DDP_OK, DDP_ERROR, DDP_OUT_OF_MEMORY) and, for a
//   failure, puts a malloc'ed, NUL-terminated message in its last argument `error` (free it with
//   ddp_free_message). An allocation that fails is DDP_OUT_OF_MEMORY, with libtorch's message when
//   there was room to copy it and NULL otherwise: a failure is never reported as a null message,
//   which would read as success. No C++ exception crosses the boundary.
// - Tensors arrive as `at::Tensor*`, which is what tch's `C_tensor` pointers are.
// - Handles own one reference to the underlying c10d object; *_free drops it.

#define USE_C10D_GLOO 1

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DISTILL_DDP_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

struct ddp_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct ddp_group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

// The statuses; src/ffi.rs has the same values.
enum : int { DDP_OK = 0, DDP_ERROR = 1, DDP_OUT_OF_MEMORY = 2 };

namespace {

// `status` with a copy of `text` in *error; DDP_OUT_OF_MEMORY with *error NULL when the copy
// cannot be allocated, since memory has run out by then whatever the failure was.
int fail(int status, const char* text, char** error) {
  size_t len = std::strlen(text);
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out == nullptr) {
    *error = nullptr;
    return DDP_OUT_OF_MEMORY;
  }
  std::memcpy(out, text, len + 1);
  *error = out;
  return status;
}

// Runs `body`, turning any exception into a status and a message for the caller.
template <typename F>
int guarded(char** error, F&& body) {
  if (error == nullptr) {
    return DDP_ERROR;
  }
  *error = nullptr;
  try {
    body();
    return DDP_OK;
  } catch (const c10::OutOfMemoryError& e) {
    // libtorch's allocators (the CPU one included) throw this when they cannot allocate.
    return fail(DDP_OUT_OF_MEMORY, e.what_without_backtrace(), error);
  } catch (const c10::Error& e) {
    // libtorch's errors carry a C++ stack trace after the message; the message is what matters.
    return fail(DDP_ERROR, e.what_without_backtrace(), error);
  } catch (const std::bad_alloc&) {
    // `new` and the shim's own allocations; its what() says nothing more than the status does.
    return DDP_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    return fail(DDP_ERROR, e.what(), error);
  } catch (...) {
    return fail(DDP_ERROR, "unknown C++ exception in libtorch's c10d", error);
  }
}

std::chrono::milliseconds millis(int64_t value) {
  return std::chrono::milliseconds(value);
}

// Waits for a collective, bounded by `timeout_ms`: a peer that died or stopped taking part makes
// the wait throw (Gloo's own timeout, or c10d's "timed out" when the work never completes).
void finish(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  if (!work->wait(millis(timeout_ms))) {
    throw std::runtime_error("the collective did not complete within the timeout");
  }
}

void require(bool condition, const char* message) {
  if (!condition) {
    throw std::invalid_argument(message);
  }
}

}  // namespace

extern "C" {

void ddp_free_message(char* message) {
  std::free(message);
}

int ddp_has_nccl(void) {
#ifdef DISTILL_DDP_NCCL
  return 1;
#else
  return 0;
#endif
}

// A TCPStore: the server (when `is_server`) or a client of the store at host:port. `timeout_ms`
// bounds a client's connection attempts and every later wait on a key.
int ddp_store_tcp(const char* host, uint16_t port, int is_server, int world_size, int64_t timeout_ms,
                  ddp_store** out, char** error) {
  return guarded(error, [&] {
    require(host != nullptr && out != nullptr, "ddp_store_tcp: null argument");
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server != 0;
    options.timeout = millis(timeout_ms);
    // The server does not wait for the others here: the Rust side does, through keys every rank
    // sets, so that it can tell a rank started with another world size from one that is missing.
    options.numWorkers = static_cast<size_t>(world_size);
    options.waitWorkers = false;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    *out = new ddp_store{std::move(store)};
  });
}

// A view of `base` whose keys all start with `prefix`, so that several groups share one store.
int ddp_store_prefixed(const ddp_store* base, const char* prefix, ddp_store** out, char** error) {
  return guarded(error, [&] {
    require(base != nullptr && prefix != nullptr && out != nullptr, "ddp_store_prefixed: null argument");
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base->store);
    *out = new ddp_store{std::move(store)};
  });
}

// Sets `key` to the `len` bytes at `value`.
int ddp_store_set(const ddp_store* store, const char* key, const uint8_t* value, size_t len, char** error) {
  return guarded(error, [&] {
    require(store != nullptr && key != nullptr && (value != nullptr || len == 0), "ddp_store_set: null argument");
    store->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

// The value of `key`, waiting up to `timeout_ms` for a rank to set it; malloc'ed into *out
// (free it with ddp_free_message), its length in *len.
int ddp_store_get(const ddp_store* store, const char* key, int64_t timeout_ms, uint8_t** out, size_t* len,
                  char** error) {
  return guarded(error, [&] {
    require(store != nullptr && key != nullptr && out != nullptr && len != nullptr, "ddp_store_get: null argument");
    store->store->wait({std::string(key)}, millis(timeout_ms));
    std::vector<uint8_t> value = store->store->get(std::string(key));
    auto* copy = static_cast<uint8_t*>(std::malloc(value.empty() ? 1 : value.size()));
    if (copy == nullptr) {
      throw std::bad_alloc();
    }
    std::memcpy(copy, value.data(), value.size());
    *out = copy;
    *len = value.size();
  });
}

void ddp_store_free(ddp_store* store) {
  delete store;
}

// A Gloo process group. Its devices: one per interface name when any is given, else one bound to
// `hostname` when given, else Gloo's default (this host's name, falling back to loopback).
int ddp_group_gloo(const ddp_store* store, int rank, int size, int64_t timeout_ms, const char* const* interfaces,
                   size_t n_interfaces, const char* hostname, int threads, ddp_group** out, char** error) {
  return guarded(error, [&] {
    require(store != nullptr && out != nullptr, "ddp_group_gloo: null argument");
    auto options = c10d::ProcessGroupGloo::Options::create(millis(timeout_ms));
    for (size_t i = 0; i < n_interfaces; ++i) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(std::string(interfaces[i])));
    }
    if (options->devices.empty()) {
      options->devices.push_back(hostname != nullptr
                                     ? c10d::ProcessGroupGloo::createDeviceForHostname(std::string(hostname))
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = threads;
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, options);
    *out = new ddp_group{std::move(group)};
  });
}

// An NCCL process group (CUDA tensors), when this shim was compiled with it.
int ddp_group_nccl(const ddp_store* store, int rank, int size, int64_t timeout_ms, ddp_group** out, char** error) {
  return guarded(error, [&] {
    require(store != nullptr && out != nullptr, "ddp_group_nccl: null argument");
#ifdef DISTILL_DDP_NCCL
    // Without a GPU, libtorch's NCCL group would fail later, inside a collective or in NCCL itself.
    c10::DeviceIndex devices = c10::cuda::device_count();
    if (devices == 0) {
      throw std::runtime_error("no CUDA device is available to this process");
    }
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = millis(timeout_ms);
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, size, options);
    *out = new ddp_group{std::move(group)};
#else
    (void)rank;
    (void)size;
    (void)timeout_ms;
    throw std::runtime_error(
        "NCCL is not compiled in: build distill-ddp with its `cuda` feature against a libtorch with CUDA");
#endif
  });
}

void ddp_group_free(ddp_group* group) {
  delete group;
}

// Overwrites `tensor` on every rank with its value on `root`.
int ddp_broadcast(ddp_group* group, const at::Tensor* tensor, int root, int64_t timeout_ms, char** error) {
  return guarded(error, [&] {
    require(group != nullptr && tensor != nullptr, "ddp_broadcast: null argument");
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    options.timeout = millis(timeout_ms);
    finish(group->backend->broadcast(tensors, options), timeout_ms);
  });
}

// Sums each of the `n` tensors across ranks, in place; several tensors go in one coalesced call.
int ddp_allreduce_sum(ddp_group* group, const at::Tensor* const* tensors, size_t n, int64_t timeout_ms,
                      char** error) {
  return guarded(error, [&] {
    require(group != nullptr && (tensors != nullptr || n == 0), "ddp_allreduce_sum: null argument");
    if (n == 0) {
      return;
    }
    std::vector<at::Tensor> list;
    list.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      require(tensors[i] != nullptr, "ddp_allreduce_sum: null tensor");
      list.push_back(*tensors[i]);
    }
    if (n == 1) {
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      options.timeout = millis(timeout_ms);
      finish(group->backend->allreduce(list, options), timeout_ms);
    } else {
      c10d::AllreduceCoalescedOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      options.timeout = millis(timeout_ms);
      finish(group->backend->allreduce_coalesced(list, options), timeout_ms);
    }
  });
}

int ddp_barrier(ddp_group* group, int64_t timeout_ms, char** error) {
  return guarded(error, [&] {
    require(group != nullptr, "ddp_barrier: null argument");
    c10d::BarrierOptions options;
    options.timeout = millis(timeout_ms);
    finish(group->backend->barrier(options), timeout_ms);
  });
}

// Makes `grad` the gradient of `param` (tch has no setter for a gradient that is still undefined).
int ddp_set_grad(const at::Tensor* param, const at::Tensor* grad, char** error) {
  return guarded(error, [&] {
    require(param != nullptr && grad != nullptr, "ddp_set_grad: null argument");
    require(param->sizes() == grad->sizes(), "ddp_set_grad: the gradient's shape differs from the parameter's");
    param->mutable_grad() = *grad;
  });
}

// Throws what `kind` names inside `guarded`, so that the Rust tests check how each failure reaches
// them (an allocation failure cannot be provoked safely): 0 nothing, 1 std::runtime_error,
// 2 std::bad_alloc, 3 libtorch's OutOfMemoryError, 4 an exception of no std type.
int ddp_raise_for_tests(int kind, char** error) {
  return guarded(error, [&] {
    switch (kind) {
      case 1:
        throw std::runtime_error("a failure for the tests");
      case 2:
        throw std::bad_alloc();
      case 3:
        TORCH_CHECK_WITH(OutOfMemoryError, false, "tried to allocate 7 GiB for the tests");
        break;
      case 4:
        throw 7;
      default:
        break;
    }
  });
}

}  // extern "C"
