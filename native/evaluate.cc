#include "evaluate.h"

#include <torch/nn/functional/loss.h>

#include <cmath>

namespace repopt {

EvalMetrics evaluateDataset(DeviceDataset& ds, int64_t batchSize, at::ScalarType dtype, const std::function<at::Tensor(const at::Tensor&)>& logitsOf) {
  namespace F = torch::nn::functional;
  at::NoGradGuard noGrad;
  at::Tensor lossSum, correct;
  const at::Tensor all = at::arange(ds.count(), at::TensorOptions().dtype(at::kLong));
  for (int64_t start = 0; start < ds.count(); start += batchSize) {
    auto [x, y] = ds.batch(all.narrow(0, start, std::min(batchSize, ds.count() - start)), Augmentation{}, dtype);
    const at::Tensor logits = logitsOf(x).to(at::kFloat);
    y = y.to(logits.device());
    const at::Tensor batchLoss = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kSum)).to(at::kDouble);
    const at::Tensor batchCorrect = logits.argmax(1).eq(y).sum();
    lossSum = lossSum.defined() ? lossSum + batchLoss : batchLoss;
    correct = correct.defined() ? correct + batchCorrect : batchCorrect;
  }
  const double n = double(ds.count());
  if (n == 0) return {0, NAN, NAN};
  return {n, lossSum.item<double>() / n, double(correct.item<int64_t>()) / n};
}

Napi::Object metricsObject(Napi::Env env, const EvalMetrics& m) {
  auto out = Napi::Object::New(env);
  out.Set("count", m.count);
  out.Set("loss", m.loss);
  out.Set("accuracy", m.accuracy);
  return out;
}

}  // namespace repopt
