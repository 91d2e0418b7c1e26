#pragma once
// Devices: why CUDA cannot be used by this build on this machine.
#include <string>

namespace repopt {

// Why a CUDA device cannot be used here: a CPU-only build, or a CUDA build that sees no device.
std::string cudaUnavailableReason();

}  // namespace repopt
