#include "gradmult.h"

#include <c10/util/Exception.h>

namespace repopt {

GradMult::GradMult(const at::Tensor& base, const at::Tensor& centre, bool identity, int64_t groups, at::IntArrayRef shape, GradMultStorage storage,
                   const at::TensorOptions& options)
    : identity_(identity), groups_(groups), shape_(shape.vec()), storage_(storage) {
  TORCH_CHECK(shape.size() == 4, "GradMult: the weight must be 4-D [O, I/groups, k, k], got ", shape);
  TORCH_CHECK(shape[2] == shape[3] && shape[2] % 2 == 1, "GradMult: the kernel must be square and odd, got ", shape);
  TORCH_CHECK(groups >= 1 && shape[0] % groups == 0, "GradMult: groups=", groups, " does not divide ", shape[0], " output channels");
  const int64_t out = shape[0], perGroup = shape[1];
  TORCH_CHECK(base.dim() == 1 && base.size(0) == out, "GradMult: base must have ", out, " entries, got ", base.sizes());
  TORCH_CHECK(centre.dim() == 1 && centre.size(0) == out, "GradMult: centre must have ", out, " entries, got ", centre.sizes());
  TORCH_CHECK(at::isfinite(base).all().item<bool>() && at::isfinite(centre).all().item<bool>(), "GradMult: scales must be finite");
  TORCH_CHECK(!identity || perGroup * groups == out, "GradMult: an identity branch needs as many input channels (", perGroup * groups, ") as output channels (",
              out, ")");
  kernel_ = shape[2];
  base_ = base.to(options);
  centre_ = centre.to(options);
  centreFactor_ = base_ + centre_;
  diagonalFactor_ = centreFactor_ + 1;
  const int64_t c = kernel_ / 2;
  if (identity) {
    // Identity element of output channel o: input channel o % (I/groups) of its group.
    at::Tensor o = at::arange(out, at::TensorOptions().dtype(at::kLong));
    diagonalIndex_ = ((o * perGroup + o.remainder(perGroup)) * kernel_ + c) * kernel_ + c;
    diagonalIndex_ = diagonalIndex_.to(options.device());
  } else {
    diagonalIndex_ = at::empty({0}, at::TensorOptions().dtype(at::kLong).device(options.device()));
  }
  // The full form also keeps the vectors (O entries each): they are what is saved.
  if (storage_ == GradMultStorage::Full) full_ = full();
}

at::Tensor GradMult::full() const {
  if (full_.defined()) return full_;
  const int64_t c = kernel_ / 2;
  at::Tensor m = base_.view({-1, 1, 1, 1}).expand(shape_).clone();
  m.select(3, c).select(2, c).copy_(centreFactor_.view({-1, 1}).expand({shape_[0], shape_[1]}));
  if (identity_) m.view(-1).index_copy_(0, diagonalIndex_, diagonalFactor_);
  return m;
}

void GradMult::multiply(const at::Tensor& grad, at::Tensor& out) const {
  if (storage_ == GradMultStorage::Full) {
    at::mul_out(out, grad, full_);
    return;
  }
  const int64_t c = kernel_ / 2;
  at::mul_out(out, grad, base_.view({-1, 1, 1, 1}));
  at::Tensor outCentre = out.select(3, c).select(2, c);
  outCentre.copy_(grad.select(3, c).select(2, c) * centreFactor_.view({-1, 1}));
  if (identity_) {
    at::Tensor flatOut = out.view(-1);
    flatOut.index_copy_(0, diagonalIndex_, grad.reshape(-1).index_select(0, diagonalIndex_) * diagonalFactor_);
  }
}

at::Tensor GradMult::multiplied(const at::Tensor& grad) const {
  at::Tensor out = at::empty_like(grad, at::MemoryFormat::Contiguous);
  multiply(grad.contiguous(), out);
  return out;
}

int64_t GradMult::bytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&base_, &centre_, &centreFactor_, &diagonalFactor_, &diagonalIndex_, &full_})
    if (t->defined()) total += t->numel() * t->element_size();
  return total;
}

void GradMult::to(const at::TensorOptions& options) {
  for (at::Tensor* t : {&base_, &centre_, &centreFactor_, &diagonalFactor_, &full_})
    if (t->defined()) *t = t->to(options);
  diagonalIndex_ = diagonalIndex_.to(options.device());
}

}  // namespace repopt
