#include "evaluate.h"

#include <torch/nn/functional/loss.h>

#include <cmath>

#include "autocast.h"
#include "network.h"

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

EvalMetrics evaluateNetwork(Network& net, DeviceDataset& ds, int64_t batchSize, c10::optional<at::ScalarType> autocast) {
  net.train(false);
  at::NoGradGuard noGrad;
  AutocastScope mixed(net.device(), autocast);
  return evaluateDataset(ds, batchSize, net.dtype(), [&](const at::Tensor& batch) { return net.forward(net.prepareInput(batch)); });
}

}  // namespace repopt
