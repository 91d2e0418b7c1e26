#pragma once
// The message of a C++ exception as users should see it: libtorch's text without its C++ backtrace.
#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>

namespace repopt {

inline std::string messageOf(const std::exception& e) {
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory";
  return e.what();
}

}  // namespace repopt
