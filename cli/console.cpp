#include "cli/console.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "io/utf8.h"

namespace wq::cli {

Console::Console(Verbosity v) : v_(v) {}

void Console::say(const char* prefix, const std::string& text) {
  if (!seen_.insert(text).second) return;
  said_.push_back(text);
  if (!v_.quiet) std::fprintf(stderr, "wquant: %s%s\n", prefix, printable(text).c_str());
}

void Console::note(const std::string& text) { say("note: ", text); }
void Console::warn(const std::string& text) { say("warning: ", text); }

void Console::detail(const std::string& text) {
  if (v_.verbose) note(text);
}

ProgressLine::ProgressLine(const Console& c) : active_(!c.verbosity().quiet && isatty(STDERR_FILENO) == 1) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(const Progress& p) {
  if (!active_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = p.tensors_done == p.tensors_total;
  if (drawn_ && !last && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double rate = p.seconds > 0 ? double(p.bytes_in_done) / p.seconds : 0.0;
  std::string eta = "--";
  if (rate > 0 && p.bytes_in_total >= p.bytes_in_done) {
    eta = format_seconds(double(p.bytes_in_total - p.bytes_in_done) / rate);
  }
  // \r and erase-to-end-of-line: the line is redrawn in place, never scrolls.
  std::fprintf(stderr, "\r\x1b[K[%zu/%zu tensors] %s / %s  %s/s  ETA %s", p.tensors_done, p.tensors_total,
               format_bytes(p.bytes_in_done).c_str(), format_bytes(p.bytes_in_total).c_str(),
               format_bytes(uint64_t(rate)).c_str(), eta.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

std::string format_fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string format_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return std::to_string(bytes) + " B";
  return format_fixed(v, v < 10 ? 2 : v < 100 ? 1 : 0) + " " + kUnits[u];
}

std::string format_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "--";
  if (s < 1) return format_fixed(s * 1e3, s < 0.01 ? 2 : 1) + " ms";
  if (s < 60) return format_fixed(s, s < 10 ? 2 : 1) + " s";
  const uint64_t t = uint64_t(s + 0.5);
  char buf[32];
  if (t < 3600) std::snprintf(buf, sizeof buf, "%u:%02u", unsigned(t / 60), unsigned(t % 60));
  else std::snprintf(buf, sizeof buf, "%u:%02u:%02u", unsigned(t / 3600), unsigned(t / 60 % 60), unsigned(t % 60));
  return buf;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string printable(const std::string& text) {
  std::string r;
  r.reserve(text.size());
  char buf[8];
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F) {
      r += char(c);
      ++i;
    } else if (c == '\n') {
      r += "\\n";
      ++i;
    } else if (c == '\r') {
      r += "\\r";
      ++i;
    } else if (c == '\t') {
      r += "\\t";
      ++i;
    } else if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      r += buf;
      ++i;
    } else if (const size_t n = utf8_length(text, i)) {
      r.append(text, i, n);
      i += n;
    } else {
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      r += buf;
      ++i;
    }
  }
  return r;
}

}  // namespace wq::cli
