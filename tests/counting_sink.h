// A sink for tests that passes results on to a writer and counts what the pipeline gave
// it: the quantized tensors' row pieces, and the results whose buffers the writer gave
// back after its background writes had read them (TensorSink::take_released).
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/pipeline.h"
#include "engine/plan.h"

namespace wq::test {

struct CountingSink : TensorSink {
  TensorSink& to;
  size_t released = 0;
  explicit CountingSink(TensorSink& t) : to(t) {}
  size_t pieces = 0;  // quantized tensors' row pieces written
  void write(TensorResult& r) override {
    pieces += r.plan && r.plan->action == TensorAction::Quantize && !(r.first_piece && r.last_piece);
    to.write(r);
  }
  bool takes_row_pieces() const override { return to.takes_row_pieces(); }
  bool quantized_pieces = true;  // false: as a sink that never takes them
  bool takes_quantized_row_pieces() const override { return quantized_pieces && to.takes_quantized_row_pieces(); }
  size_t payload_phase(size_t i, uint64_t at) const override { return to.payload_phase(i, at); }
  bool take_released(TensorResult* r) override {
    const bool got = to.take_released(r);
    released += got;
    return got;
  }
};

}  // namespace wq::test
