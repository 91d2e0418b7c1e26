#include "image_loader_js.h"

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/image_loader.h"
#include "errors.h"
#include "randaugment_js.h"

namespace repopt {

namespace {

const napi_type_tag kImageLoaderTag = {0x3b8e1f5a7c2d4e69ULL, 0x91a4c7e2f05b3d18ULL};

// The [lo, hi] pair spec.<key>.
void readPair(const Fields& f, const char* key, double out[2]) {
  Napi::Array a = f.array(key);
  if (a.Length() != 2) f.fail(key, "must be a pair [lo, hi]", true);
  for (uint32_t k = 0; k < 2; ++k) {
    Napi::Value v = a.Get(k);
    if (!v.IsNumber()) f.fail(key, "must hold two numbers");
    out[k] = v.As<Napi::Number>().DoubleValue();
  }
}

// The normalised ImageTransformSpec of lib/native.ts (lib/ has validated it; this guards the native side).
ImageTransformSpec specFrom(Napi::Env env, const Napi::Value& value, const std::string& fn) {
  if (!value.IsObject()) throw Napi::TypeError::New(env, fn + ": argument 'spec' must be an object");
  Fields f(env, value.As<Napi::Object>(), fn, "spec");
  ImageTransformSpec spec;
  const std::string mode = f.string("mode");
  if (mode != "train" && mode != "eval") f.fail("mode", "must be 'train' or 'eval'", true);
  spec.train = mode == "train";
  spec.size = int(f.integer("size", 1, 8192));
  spec.cropFraction = f.number("cropFraction");
  if (!(spec.cropFraction > 0)) f.fail("cropFraction", "must be positive", true);
  readPair(f, "scale", spec.scale);
  if (!(spec.scale[0] > 0 && spec.scale[0] <= spec.scale[1])) f.fail("scale", "must be [lo, hi] with 0 < lo <= hi", true);
  readPair(f, "ratio", spec.ratio);
  if (!(spec.ratio[0] > 0 && spec.ratio[0] <= spec.ratio[1])) f.fail("ratio", "must be [lo, hi] with 0 < lo <= hi", true);
  spec.flip = f.boolean("flip");
  spec.shrinkOnLoad = f.boolean("shrinkOnLoad");
  spec.seed = uint64_t(f.integer("seed", 0, (int64_t(1) << 53) - 1));
  spec.epoch = f.integer("epoch", 0, int64_t(1) << 40);
  if (f.has("randAugment")) {
    Napi::Value ra = f.raw("randAugment");
    if (!ra.IsObject()) f.fail("randAugment", "must be an object");
    spec.randAugment = std::make_shared<const RandAugmentSpec>(randAugmentSpecFrom(ra.As<Napi::Object>(), fn, "spec.randAugment"));
  }
  return spec;
}

// Settles one loadBatch promise on the JS thread.
struct PendingBatch {
  explicit PendingBatch(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
};

void settle(Napi::Env env, Napi::Function, PendingBatch* pending, ImageBatch* result) {
  std::unique_ptr<PendingBatch> p(pending);
  std::unique_ptr<ImageBatch> batch(result);
  if (env == nullptr) return;  // the environment is shutting down
  try {
    if (batch->cancelled) {
      p->deferred.Reject(Napi::Error::New(env, "ImageLoader.loadBatch: the loader was disposed before the batch was loaded").Value());
      return;
    }
    const size_t n = batch->status.size();
    Napi::Object out = Napi::Object::New(env);
    auto status = Napi::Uint8Array::New(env, n);
    if (n > 0) std::memcpy(status.Data(), batch->status.data(), n);
    auto messages = Napi::Array::New(env, n);
    for (size_t k = 0; k < n; ++k) messages.Set(uint32_t(k), Napi::String::New(env, batch->messages[k]));
    // The images are handed to JS without a copy: the ArrayBuffer owns the batch from here.
    const size_t bytes = batch->images.size();
    Napi::ArrayBuffer buffer;
    if (bytes == 0) {
      buffer = Napi::ArrayBuffer::New(env, 0);
    } else {
      ImageBatch* owner = batch.get();
      buffer = Napi::ArrayBuffer::New(
          env, owner->images.data(), bytes, [](Napi::Env, void*, ImageBatch* b) { delete b; }, owner);
      batch.release();
    }
    out.Set("images", Napi::Uint8Array::New(env, bytes, buffer, 0));
    out.Set("status", status);
    out.Set("messages", messages);
    p->deferred.Resolve(out);
  } catch (const Napi::Error& e) {
    p->deferred.Reject(e.Value());
  }
}

using SettleFn = Napi::TypedThreadSafeFunction<PendingBatch, ImageBatch, settle>;

class JsImageLoader : public Napi::ObjectWrap<JsImageLoader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ImageLoader",
                       {
                           InstanceAccessor<&JsImageLoader::Threads>("threads"),
                           InstanceMethod<&JsImageLoader::LoadBatch>("loadBatch"),
                           InstanceMethod<&JsImageLoader::TransformPixels>("transformPixels"),
                           InstanceMethod<&JsImageLoader::CropBox>("cropBox"),
                           InstanceMethod<&JsImageLoader::Dispose>("dispose"),
                       });
  }

  // new ImageLoader({ threads })
  explicit JsImageLoader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsImageLoader>(info) {
    guarded(info.Env(), [&] {
      Args args(info, "ImageLoader");
      args.expectCount(1, 1);
      Fields options(info.Env(), args.object(0, "options"), "ImageLoader", "options");
      const int threads = int(options.integer("threads", 1, 256));
      loader_ = std::make_unique<ImageLoader>(threads);
      threads_ = threads;
      info.This().As<Napi::Object>().TypeTag(&kImageLoaderTag);
    });
  }

 private:
  Napi::Value Threads(const Napi::CallbackInfo& info) {
    requireReceiver(info, kImageLoaderTag, "ImageLoader.threads");
    return Napi::Number::New(info.Env(), threads_);
  }

  ImageLoader& live(Napi::Env env, const char* fn) {
    if (!loader_) throw Napi::Error::New(env, std::string(fn) + ": the loader has been disposed");
    return *loader_;
  }

  // loadBatch(files: string[], indices: Int32Array, spec): Promise<{ images, status, messages }>
  Napi::Value LoadBatch(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Napi::Env env = info.Env();
      Args args(info, "ImageLoader.loadBatch");
      args.expectCount(3, 3);
      ImageLoader& loader = live(env, args.fn());
      if (!args[0].IsArray()) args.typeError("files", "an array of strings");
      Napi::Array list = args[0].As<Napi::Array>();
      std::vector<std::string> files(list.Length());
      for (uint32_t k = 0; k < list.Length(); ++k) {
        Napi::Value v = list.Get(k);
        if (!v.IsString()) args.typeError("files", "an array of strings");
        files[k] = v.As<Napi::String>().Utf8Value();
      }
      if (!args[1].IsTypedArray() || args[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) args.typeError("indices", "an Int32Array");
      auto idx = args[1].As<Napi::Int32Array>();
      if (idx.ElementLength() != files.size()) args.rangeError("indices", "must hold one index per file");
      std::vector<int64_t> indices(files.size());
      for (size_t k = 0; k < files.size(); ++k) {
        if (idx[k] < 0) args.rangeError("indices", "must be non-negative");
        indices[k] = idx[k];
      }
      ImageTransformSpec spec = specFrom(env, args[2], args.fn());
      auto pending = std::make_unique<PendingBatch>(env);
      Napi::Promise promise = pending->deferred.Promise();
      SettleFn fn = SettleFn::New(env, "repopt.ImageLoader.loadBatch", 0, 1, pending.get());
      pending.release();  // settle() owns it from here
      loader.submit(std::move(files), std::move(indices), std::move(spec), [fn](std::unique_ptr<ImageBatch> batch) mutable {
        ImageBatch* b = batch.release();
        if (fn.BlockingCall(b) != napi_ok) delete b;
        fn.Release();
      });
      return promise;
    });
  }

  // transformPixels(rgb, width, height, index, spec, out, slot): one sample from decoded HWC RGB pixels.
  Napi::Value TransformPixels(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Args args(info, "ImageLoader.transformPixels");
      args.expectCount(7, 7);
      live(info.Env(), args.fn());
      auto rgb = args.uint8Array(0, "rgb");
      const int width = int(args.integer(1, "width", 1, 1 << 20)), height = int(args.integer(2, "height", 1, 1 << 20));
      const int64_t index = args.integer(3, "index", 0, (int64_t(1) << 53) - 1);
      if (int64_t(rgb.ElementLength()) != int64_t(width) * height * 3) args.rangeError("rgb", "must hold width * height * 3 bytes");
      const ImageTransformSpec spec = specFrom(info.Env(), args[4], args.fn());
      auto out = args.uint8Array(5, "out");
      const int64_t sample = int64_t(spec.size) * spec.size * 3;
      const int64_t slot = args.integer(6, "slot", 0, int64_t(out.ElementLength()) / sample - 1);
      const RgbView view{rgb.Data(), width, height, std::ptrdiff_t(width) * 3};
      try {
        transformPixels(view, index, spec, out.Data() + slot * sample);
      } catch (const ImageError& e) {
        throw Napi::Error::New(info.Env(), std::string(args.fn()) + ": " + e.what());
      }
      return info.Env().Undefined();
    });
  }

  // cropBox(width, height, index, spec): the training crop of sample `index`.
  Napi::Value CropBox(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      Args args(info, "ImageLoader.cropBox");
      args.expectCount(4, 4);
      live(info.Env(), args.fn());
      const int width = int(args.integer(0, "width", 1, 1 << 20)), height = int(args.integer(1, "height", 1, 1 << 20));
      const int64_t index = args.integer(2, "index", 0, (int64_t(1) << 53) - 1);
      const ImageTransformSpec spec = specFrom(info.Env(), args[3], args.fn());
      if (!spec.train) args.rangeError("spec", "must be a 'train' spec (the crop is random only in training)");
      const repopt::CropBox box = cropBoxOf(width, height, index, spec);
      Napi::Object out = Napi::Object::New(info.Env());
      out.Set("top", box.top);
      out.Set("left", box.left);
      out.Set("height", box.height);
      out.Set("width", box.width);
      out.Set("flip", box.flip);
      return out;
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      if (loader_) loader_->dispose();
      loader_.reset();
      return info.Env().Undefined();
    });
  }

  std::unique_ptr<ImageLoader> loader_;
  int threads_ = 0;
};

// decodeImage(file): { width, height, rgb } (HWC, EXIF orientation applied).
Napi::Value DecodeImage(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "decodeImage");
    args.expectCount(1, 1);
    const std::string file = args.string(0, "file");
    RgbImage image;
    try {
      image = decodeImageFile(file);
    } catch (const ImageError& e) {
      throw Napi::Error::New(info.Env(), "decodeImage: " + file + ": " + e.what());
    }
    Napi::Object out = Napi::Object::New(info.Env());
    auto rgb = Napi::Uint8Array::New(info.Env(), image.pixels.size());
    if (!image.pixels.empty()) std::memcpy(rgb.Data(), image.pixels.data(), image.pixels.size());
    out.Set("width", image.width);
    out.Set("height", image.height);
    out.Set("rgb", rgb);
    return out;
  });
}

}  // namespace

void InitImageLoader(Napi::Env env, Napi::Object exports) {
  exports.Set("ImageLoader", JsImageLoader::Define(env));
  exports.Set("decodeImage", Napi::Function::New<DecodeImage>(env, "decodeImage"));
}

}  // namespace repopt
