#pragma once
// Stand-in for libtorch's torch/csrc/distributed/autograd/context/context.h, which Debian's
// libtorch-dev 1.13 does not ship although c10d/reducer.hpp includes it. reducer.hpp needs only two
// names from it: the gradient callback type (a static_assert) and the context pointer type of a
// member (a std::shared_ptr, whose layout does not depend on the pointee). Both are declared here
// exactly as libtorch 1.13 declares them, so c10d::Reducer has the layout libtorch_cpu was built with.
// scripts/torch-config.js puts native/compat on the include path only where the real header is missing.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
