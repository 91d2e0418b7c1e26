#pragma once
// The random stream of one sample: a function of (seed, epoch, dataset index) only, so that a sample's
// crop, flip and RandAugment draws do not depend on which thread or rank decodes it, on the batch it
// falls in, or on where a run was resumed. splitmix64 (Steele et al.) over a key mixed from the three.
#include <cmath>
#include <cstdint>

namespace repopt {

class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, int64_t index) : state_(mix(mix(mix(seed) ^ uint64_t(epoch)) ^ uint64_t(index))) {}

  uint64_t next() { return mix(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), n >= 1.
  int64_t below(int64_t n) { return int64_t(uniform() * double(n)); }
  bool coin(double p) { return uniform() < p; }
  // Standard normal (Box-Muller).
  double normal() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
  }

 private:
  static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

}  // namespace repopt
