#include "device.h"

#include <torch/version.h>

namespace repopt {

std::string cudaUnavailableReason() {
#ifdef REPOPT_CUDA
  return std::string("CUDA is not available: this binary and libtorch ") + TORCH_VERSION +
         " are built with CUDA, but no CUDA device is visible (no GPU, no NVIDIA driver (libcuda.so.1), or CUDA_VISIBLE_DEVICES hides them)";
#else
  return std::string("CUDA is not available: this binary is built for a CPU-only libtorch ") + TORCH_VERSION +
         "; CUDA needs a CUDA libtorch and a binary built for it (Debian 13: libtorch-cuda-2.6 and the libtorch2_6-cuda12_4 prebuild; or a"
         " pip PyTorch with CUDA and a source build, REPOPT_TORCH=python)";
#endif
}

}  // namespace repopt
