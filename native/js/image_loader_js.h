#pragma once
// The JS ImageLoader (the streaming image loader's decoding threads) and decodeImage (tests).
#include <napi.h>

namespace repopt {

void InitImageLoader(Napi::Env env, Napi::Object exports);

}  // namespace repopt
