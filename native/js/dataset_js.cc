#include "dataset_js.h"

#include <cstring>

#include "addon.h"
#include "tensor.h"

namespace repopt {

namespace {
const napi_type_tag kDatasetTag = {0x5c1e9a7b3d2f8e46ULL, 0x0d7b6a5c4e3f2a19ULL};

at::Tensor floats(const Fields& f, const char* key, int64_t expected) {
  Napi::Array a = f.array(key);
  if (int64_t(a.Length()) != expected) f.fail(key, "must hold " + std::to_string(expected) + " numbers (one per channel)", true);
  std::vector<float> v;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value x = a.Get(k);
    if (!x.IsNumber() || !std::isfinite(x.As<Napi::Number>().DoubleValue())) f.fail(key, "must hold finite numbers", true);
    v.push_back(x.As<Napi::Number>().FloatValue());
  }
  return at::tensor(v);
}
}  // namespace

Augmentation readAugmentation(const Fields& f) {
  Augmentation a;
  a.pad = f.has("pad") ? f.integer("pad", 0, 1024) : 0;
  a.flip = f.boolean("flip", false);
  a.resizedCrop = f.boolean("resizedCrop", false);
  if (f.has("cropScale")) {
    Napi::Array v = f.array("cropScale");
    if (v.Length() != 2 || !v.Get(0u).IsNumber() || !v.Get(1u).IsNumber()) f.fail("cropScale", "must be [min, max]", true);
    a.scaleMin = v.Get(0u).As<Napi::Number>().DoubleValue(), a.scaleMax = v.Get(1u).As<Napi::Number>().DoubleValue();
    if (!(a.scaleMin > 0 && a.scaleMin <= a.scaleMax && a.scaleMax <= 1)) f.fail("cropScale", "must satisfy 0 < min <= max <= 1", true);
  }
  if (f.has("cropRatio")) {
    Napi::Array v = f.array("cropRatio");
    if (v.Length() != 2 || !v.Get(0u).IsNumber() || !v.Get(1u).IsNumber()) f.fail("cropRatio", "must be [min, max]", true);
    a.ratioMin = v.Get(0u).As<Napi::Number>().DoubleValue(), a.ratioMax = v.Get(1u).As<Napi::Number>().DoubleValue();
    if (!(a.ratioMin > 0 && a.ratioMin <= a.ratioMax)) f.fail("cropRatio", "must satisfy 0 < min <= max", true);
  }
  if (a.resizedCrop && a.pad > 0) f.fail("pad", "and resizedCrop exclude each other", true);
  return a;
}

namespace {
// permutation(count, seed, epoch): the order Dataset.permutation gives a data set of `count` samples,
// for data that streams from files instead of living on the device.
Napi::Value SamplePermutation(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "permutation");
    args.expectCount(3, 3);
    const int64_t count = args.integer(0, "count", 1, (int64_t(1) << 40));
    const int64_t seed = args.integer(1, "seed", 0, (int64_t(1) << 53) - 1);
    const int64_t epoch = args.integer(2, "epoch", 0, int64_t(1) << 40);
    return Tensor::Wrap(info.Env(), samplePermutation(count, uint64_t(seed), epoch));
  });
}
}  // namespace

void JsDataset::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Dataset",
                                    {
                                        InstanceAccessor<&JsDataset::Count>("count"),
                                        InstanceAccessor<&JsDataset::Shape>("shape"),
                                        InstanceAccessor<&JsDataset::Device>("device"),
                                        InstanceMethod<&JsDataset::Permutation>("permutation"),
                                        InstanceMethod<&JsDataset::Batch>("batch"),
                                        InstanceMethod<&JsDataset::RngState>("rngState"),
                                        InstanceMethod<&JsDataset::SetRngState>("setRngState"),
                                        InstanceMethod<&JsDataset::Dispose>("dispose"),
                                    });
  exports.Set("Dataset", ctor);
  exports.Set("permutation", Napi::Function::New<SamplePermutation>(env, "permutation"));
}

JsDataset::JsDataset(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsDataset>(info) {
  guarded(info.Env(), [&] {
    Args args(info, "Dataset");
    args.expectCount(4, 4);
    auto images = args.uint8Array(0, "images");
    auto shape = args.shape(1, "shape");
    if (shape.size() != 4) args.rangeError("shape", "must be [N, C, H, W]");
    int64_t numel = shape[0] * shape[1] * shape[2] * shape[3];
    if (numel != int64_t(images.ElementLength())) {
      args.rangeError("shape", "describes " + std::to_string(numel) + " bytes but 'images' holds " + std::to_string(images.ElementLength()));
    }
    if (!args[2].IsTypedArray() || args[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) args.typeError("labels", "an Int32Array");
    auto labels = args[2].As<Napi::Int32Array>();
    if (int64_t(labels.ElementLength()) != shape[0]) {
      args.rangeError("labels", "holds " + std::to_string(labels.ElementLength()) + " labels for " + std::to_string(shape[0]) + " images");
    }
    Fields options(info.Env(), args.object(3, "options"), "Dataset", "options");
    at::Tensor imageTensor = at::empty(shape, at::TensorOptions().dtype(at::kByte));
    if (numel > 0) std::memcpy(imageTensor.data_ptr(), images.Data(), size_t(numel));
    at::Tensor labelTensor = at::empty({shape[0]}, at::TensorOptions().dtype(at::kInt));
    if (shape[0] > 0) std::memcpy(labelTensor.data_ptr(), labels.Data(), size_t(shape[0]) * 4);
    at::Device device = deviceFromName(info.Env(), "Dataset", "options.device", options.string("device", "cpu"));
    const int64_t seed = options.has("augmentSeed") ? options.integer("augmentSeed", 0, (int64_t(1) << 53) - 1) : 0;
    dataset_ =
        std::make_shared<DeviceDataset>(imageTensor, labelTensor, floats(options, "mean", shape[1]), floats(options, "std", shape[1]), device, uint64_t(seed));
    info.This().As<Napi::Object>().TypeTag(&kDatasetTag);
  });
}

std::shared_ptr<DeviceDataset> JsDataset::Get(const Args& args, size_t i, const char* name) {
  if (i >= args.count() || !args[i].IsObject() || !args[i].As<Napi::Object>().CheckTypeTag(&kDatasetTag)) args.typeError(name, "a Dataset");
  JsDataset* self = Napi::ObjectWrap<JsDataset>::Unwrap(args[i].As<Napi::Object>());
  self->live(args.fn());
  return self->dataset_;
}

DeviceDataset& JsDataset::live(const char* fn) const {
  if (!dataset_) throw Napi::Error::New(Env(), std::string(fn) + ": the dataset has been disposed");
  if (dataset_->asyncUsers > 0) throw Napi::Error::New(Env(), std::string(fn) + ": an asynchronous step is running on this dataset; await it first");
  return *dataset_;
}

Napi::Value JsDataset::Count(const Napi::CallbackInfo& info) {
  requireReceiver(info, kDatasetTag, "Dataset.count");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), double(live("Dataset.count").count())); });
}

Napi::Value JsDataset::Shape(const Napi::CallbackInfo& info) {
  requireReceiver(info, kDatasetTag, "Dataset.shape");
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto dims = live("Dataset.shape").imageShape();
    auto out = Napi::Array::New(info.Env(), dims.size());
    for (size_t k = 0; k < dims.size(); ++k) out.Set(uint32_t(k), Napi::Number::New(info.Env(), double(dims[k])));
    return out;
  });
}

Napi::Value JsDataset::Device(const Napi::CallbackInfo& info) {
  requireReceiver(info, kDatasetTag, "Dataset.device");
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), live("Dataset.device").device().str()); });
}

Napi::Value JsDataset::Permutation(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Dataset.permutation");
    args.expectCount(2, 2);
    const int64_t seed = args.integer(0, "seed", 0, (int64_t(1) << 53) - 1);
    const int64_t epoch = args.integer(1, "epoch", 0, int64_t(1) << 40);
    return Tensor::Wrap(info.Env(), live(args.fn()).permutation(uint64_t(seed), epoch));
  });
}

Napi::Value JsDataset::Batch(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Dataset.batch");
    args.expectCount(1, 3);
    DeviceDataset& ds = live(args.fn());
    const at::Tensor& indices = Tensor::Get(args, 0, "indices");
    if (indices.dim() != 1 || at::isFloatingType(indices.scalar_type())) args.typeError("indices", "a 1-D integer Tensor");
    if (indices.numel() > 0 && (indices.min().item<int64_t>() < 0 || indices.max().item<int64_t>() >= ds.count())) {
      args.rangeError("indices", "must lie in [0, " + std::to_string(ds.count()) + ")");
    }
    Augmentation aug;
    if (args.has(1)) aug = readAugmentation(Fields(info.Env(), args.object(1, "augmentation"), args.fn(), "augmentation"));
    at::ScalarType dtype = args.has(2) ? parseDtype(args, 2, "dtype") : at::kFloat;
    auto [x, y] = ds.batch(indices, aug, dtype);
    auto out = Napi::Array::New(info.Env(), 2);
    out.Set(0u, Tensor::Wrap(info.Env(), x));
    out.Set(1u, Tensor::Wrap(info.Env(), y));
    return out;
  });
}

Napi::Value JsDataset::RngState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    at::Tensor s = live("Dataset.rngState").rngState().contiguous();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), s.data_ptr<uint8_t>(), size_t(s.numel()));
  });
}

Napi::Value JsDataset::SetRngState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Args args(info, "Dataset.setRngState");
    args.expectCount(1, 1);
    auto bytes = args.uint8Array(0, "state");
    DeviceDataset& dataset = live(args.fn());
    // libtorch would report a wrong size in its own terms; the size is the generator's (CPU or CUDA).
    const int64_t expected = dataset.rngState().numel();
    if (int64_t(bytes.ElementLength()) != expected) {
      args.rangeError("state", "must hold " + std::to_string(expected) + " bytes (what rngState() returns on this dataset's device), got " +
                                   std::to_string(bytes.ElementLength()));
    }
    at::Tensor s = at::empty({expected}, at::TensorOptions().dtype(at::kByte));
    if (expected > 0) std::memcpy(s.data_ptr(), bytes.Data(), bytes.ElementLength());
    dataset.setRngState(s);
    return info.Env().Undefined();
  });
}

Napi::Value JsDataset::Dispose(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (dataset_ && dataset_->asyncUsers > 0) {
      throw Napi::Error::New(info.Env(), "Dataset.dispose: an asynchronous step is running on this dataset; await it first");
    }
    dataset_.reset();
    return info.Env().Undefined();
  });
}

const at::Tensor& permutationArg(const Args& args, size_t i, const DeviceDataset& ds) {
  const at::Tensor& perm = Tensor::Get(args, i, "permutation");
  if (perm.dim() != 1 || perm.scalar_type() != at::kLong || perm.size(0) != ds.count()) {
    args.typeError("permutation", "the dataset's permutation (an int64 Tensor of " + std::to_string(ds.count()) + " indices)");
  }
  return perm;
}

}  // namespace repopt
