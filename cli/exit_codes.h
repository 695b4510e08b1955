// wquant's exit codes (listed in `wquant help`). ErrorKind's numbers are the codes,
// except Internal: a bug exits 1, the conventional "something went wrong".
#pragma once

#include "engine/error.h"

namespace wq::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInput = 3;
inline constexpr int kExitOutput = 4;
inline constexpr int kExitInterrupted = 130;  // 128 + SIGINT, as shells report Ctrl-C

inline int exit_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::Input: return kExitInput;
    case ErrorKind::Output: return kExitOutput;
    case ErrorKind::Internal: return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace wq::cli
