// The one exception type of wquant: its message names the file, the tensor and the
// problem, ready to print. The CLI maps it to an exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace wq {

enum class ErrorKind { Usage = 2, Input = 3, Output = 4, Internal = 5 };

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, ErrorKind kind = ErrorKind::Input)
      : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace wq
