#pragma once
// GradMult of one conv weight [O, I/groups, k, k]:
//   M[o,i,p,q] = base[o] + (centre position ? centre[o] : 0) + (identity && i == o % (I/groups) at the centre ? 1 : 0)
// stored either compactly (per-output-channel vectors, the default) or as a full tensor like the
// official code. Both forms multiply a gradient by the same per-element factors, so they give
// bit-identical updates.
#include <ATen/ATen.h>

namespace repopt {

enum class GradMultStorage { Compact, Full };

class GradMult {
 public:
  // base (s^p) and centre (t^p): [O] vectors; shape: the weight's shape.
  GradMult(const at::Tensor& base, const at::Tensor& centre, bool identity, int64_t groups, at::IntArrayRef shape, GradMultStorage storage,
           const at::TensorOptions& options);

  // out = grad * M (out may alias nothing; it is fully overwritten).
  void multiply(const at::Tensor& grad, at::Tensor& out) const;
  at::Tensor multiplied(const at::Tensor& grad) const;
  // The full M tensor (materialised on demand for the compact form).
  at::Tensor full() const;

  GradMultStorage storage() const { return storage_; }
  bool identity() const { return identity_; }
  int64_t groups() const { return groups_; }
  const at::Tensor& base() const { return base_; }
  const at::Tensor& centre() const { return centre_; }
  // Per-channel factors at the kernel centre (base + centre) and on the identity diagonal (+1).
  const at::Tensor& centreFactor() const { return centreFactor_; }
  const at::Tensor& diagonalFactor() const { return diagonalFactor_; }
  // Flat indices of the identity diagonal's centre elements (empty without identity).
  const at::Tensor& diagonalIndex() const { return diagonalIndex_; }
  int64_t kernel() const { return kernel_; }
  // Bytes held by this GradMult's tensors.
  int64_t bytes() const;
  void to(const at::TensorOptions& options);

 private:
  at::Tensor base_, centre_, centreFactor_, diagonalFactor_, diagonalIndex_, full_;
  bool identity_;
  int64_t groups_, kernel_;
  std::vector<int64_t> shape_;
  GradMultStorage storage_;
};

}  // namespace repopt
