// Output buffers a writer took from the pipeline's results because background writes
// still read them (OutputFile::write_held), each handed back (TensorSink::take_released)
// once the file says the last write reading it has finished. A writer declares it before
// its OutputFile, so it is destroyed after it: the file's destructor waits for its writes
// before this memory goes.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>

#include "engine/pipeline.h"
#include "io/output_file.h"

namespace wq {

class HeldPayloads {
 public:
  // Takes r's buffers (its bytes and its quantized tensor's) until `ticket` has finished;
  // nothing for ticket 0 (nothing held).
  void hold(TensorResult& r, uint64_t ticket) {
    if (!ticket) return;
    TensorResult h;
    h.bytes = std::move(r.bytes);
    h.quantized = std::move(r.quantized);
    held_.emplace_back(ticket, std::move(h));
  }
  // The buffers of the oldest result whose writes have finished, into *r; false if none has.
  bool take_released(OutputFile& out, TensorResult* r) {
    if (held_.empty() || !out.finished(held_.front().first)) return false;
    *r = std::move(held_.front().second);
    held_.pop_front();
    return true;
  }

 private:
  std::deque<std::pair<uint64_t, TensorResult>> held_;  // in ticket order
};

}  // namespace wq
