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
      : std::runtime_error(msg), kind_(kind), message_(msg) {}
  ErrorKind kind() const { return kind_; }
  // The whole message: what() stops at the first NUL, which a name from a file may hold.
  const std::string& message() const { return message_; }

 private:
  ErrorKind kind_;
  std::string message_;
};

}  // namespace wq
