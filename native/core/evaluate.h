#pragma once
// Whole-dataset evaluation: mean cross-entropy and accuracy of a logits function over a dataset in
// order, without augmentation; one host-device synchronisation at the end.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <functional>

#include "dataset.h"

namespace repopt {

struct EvalMetrics {
  double count, loss, accuracy;
};

// logitsOf gets each batch (on the dataset's device, in `dtype`) and returns [N, classes] logits.
EvalMetrics evaluateDataset(DeviceDataset& ds, int64_t batchSize, at::ScalarType dtype, const std::function<at::Tensor(const at::Tensor&)>& logitsOf);

class Network;

// net in eval mode over ds (forward in `autocast` precision when set).
EvalMetrics evaluateNetwork(Network& net, DeviceDataset& ds, int64_t batchSize, c10::optional<at::ScalarType> autocast);

}  // namespace repopt
