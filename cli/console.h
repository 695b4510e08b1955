// Where wquant's words go. Results (tables, summaries, JSON) go to stdout; notes,
// warnings, progress and errors to stderr, so `wquant ... --json | jq` always gets a
// clean document.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "cli/args.h"
#include "engine/pipeline.h"

namespace wq::cli {

class Console {
 public:
  explicit Console(Verbosity v);

  const Verbosity& verbosity() const { return v_; }
  // Human-readable results on stdout: not with --json or --quiet.
  bool human() const { return !v_.json && !v_.quiet; }
  bool verbose() const { return v_.verbose; }

  // "wquant: note: TEXT" on stderr unless --quiet; a text already said is not repeated.
  void note(const std::string& text);
  // "wquant: warning: TEXT" on stderr unless --quiet; also not repeated.
  void warn(const std::string& text);
  // A note shown with --verbose only.
  void detail(const std::string& text);
  // Everything note() and warn() said, in order (for --json summaries).
  const std::vector<std::string>& said() const { return said_; }

 private:
  void say(const char* prefix, const std::string& text);
  Verbosity v_;
  std::set<std::string> seen_;
  std::vector<std::string> said_;
};

// One line on stderr, rewritten in place: tensors done/total, bytes, rate, ETA. Active
// only when stderr is a terminal and not --quiet; never in a pipe or a log file.
class ProgressLine {
 public:
  explicit ProgressLine(const Console& c);
  ~ProgressLine();
  bool active() const { return active_; }
  void update(const Progress& p);  // throttled to ~10 updates a second
  void finish();                   // erases the line

 private:
  bool active_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// 1.5 KiB, 23.4 MiB, 1.20 GiB.
std::string format_bytes(uint64_t bytes);
// 0.42 s, 12.3 s, 4:05, 1:02:03.
std::string format_seconds(double s);
// Fixed-point with `digits` decimals.
std::string format_fixed(double v, int digits);
// "[64, 172]".
std::string format_shape(const std::vector<int64_t>& shape);
// Text safe for one line of a terminal or log: control characters as JSON escapes (\n,
// \t, \u0000, ...), bytes that are not UTF-8 as \xFF; everything else unchanged. Names
// come from input files and may hold anything.
std::string printable(const std::string& text);

}  // namespace wq::cli
