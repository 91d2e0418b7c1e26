#pragma once
// Runtime facts and global settings: versions, CUDA, threads, seeds.
#include <napi.h>

namespace repopt {

void InitRuntime(Napi::Env env, Napi::Object exports);

}  // namespace repopt
