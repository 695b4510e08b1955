// The public API's one error type (wquant::Error) from the engine's (wq::Error): every
// entry point of include/wquant/wquant.h runs its body through translate_errors.
#pragma once

#include <new>
#include <wquant/wquant.h>

#include "engine/error.h"

namespace wquant {

inline Error::Kind error_kind_of(wq::ErrorKind k) {
  switch (k) {
    case wq::ErrorKind::Usage: return Error::Kind::Usage;
    case wq::ErrorKind::Input: return Error::Kind::Input;
    case wq::ErrorKind::Output: return Error::Kind::Output;
    default: return Error::Kind::Internal;
  }
}

template <class F>
auto translate_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const wq::Error& e) {
    throw Error(e.what(), error_kind_of(e.kind()));
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(e.what(), Error::Kind::Internal);
  }
}

}  // namespace wquant
