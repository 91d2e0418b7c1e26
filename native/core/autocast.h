#pragma once
// Mixed precision for the forward pass of a step, like torch.autocast: ops that autocast allows run
// in the lower precision; the previous state is restored when the scope ends.
#include <ATen/autocast_mode.h>
#include <c10/util/Optional.h>
#include <torch/version.h>

namespace repopt {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocastEnabled(at::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
inline void setAutocastEnabled(at::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
inline at::ScalarType autocastDtype(at::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
inline void setAutocastDtype(at::DeviceType t, at::ScalarType d) { at::autocast::set_autocast_dtype(t, d); }
#else
inline bool autocastEnabled(at::DeviceType t) { return t == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
inline void setAutocastEnabled(at::DeviceType t, bool on) { t == at::kCUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on); }
inline at::ScalarType autocastDtype(at::DeviceType t) {
  return t == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
inline void setAutocastDtype(at::DeviceType t, at::ScalarType d) {
  t == at::kCUDA ? at::autocast::set_autocast_gpu_dtype(d) : at::autocast::set_autocast_cpu_dtype(d);
}
#endif

class AutocastScope {
 public:
  AutocastScope(at::Device device, c10::optional<at::ScalarType> dtype) : active_(dtype.has_value()), type_(device.type()) {
    if (!active_) return;
    wasEnabled_ = autocastEnabled(type_);
    wasDtype_ = autocastDtype(type_);
    setAutocastEnabled(type_, true);
    setAutocastDtype(type_, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    setAutocastEnabled(type_, wasEnabled_);
    setAutocastDtype(type_, wasDtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_;
  at::DeviceType type_;
  bool wasEnabled_ = false;
  at::ScalarType wasDtype_ = at::kFloat;
};

}  // namespace repopt
