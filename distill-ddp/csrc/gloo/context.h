// The Gloo context, by name; `ProcessGroupGloo::setTimeout` (inline in c10d's header) names its
// `setTimeout`. Declared only, never called from the shim; see README.md.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
