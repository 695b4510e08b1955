// What the public API's entry points share: the one error type (wquant::Error) from the
// engine's (wq::Error), through translate_errors, QuantOptions as an engine spec, and
// its thread count as the program takes --threads.
#pragma once

#include <new>
#include <wquant/wquant.h>

#include "engine/error.h"
#include "engine/quant_spec.h"
#include "engine/scheduler.h"

namespace wquant {

inline Error::Kind error_kind_of(wq::ErrorKind k) {
  switch (k) {
    case wq::ErrorKind::Usage: return Error::Kind::Usage;
    case wq::ErrorKind::Input: return Error::Kind::Input;
    case wq::ErrorKind::Output: return Error::Kind::Output;
    default: return Error::Kind::Internal;
  }
}

// The engine spec of QuantOptions (HQQ implies asymmetric, as on the command line).
inline wq::QuantSpec spec_of(const QuantOptions& o) {
  wq::QuantSpec s;
  s.bits = o.bits;
  s.block = o.block;
  s.asym = o.asym || o.hqq;
  s.hqq = o.hqq;
  s.fp16 = o.fp16;
  s.hqq_opts.max_steps = o.hqq_steps;
  return s;
}

// QuantOptions::threads as the program's --threads takes it: 0 (or less) every usable CPU,
// and more than those capped at them (more threads than CPUs gains nothing, README; a
// million asked for crashed inside oneTBB).
inline int capped_threads(int threads) {
  const int cpus = wq::usable_cpus();
  return threads > 0 && threads < cpus ? threads : cpus;
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
