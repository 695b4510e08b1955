// Turns ONNX in and out on for this program (io/onnx_hooks.h). Idempotent; call it
// before any thread starts.
#pragma once

namespace wq {
void enable_onnx();
}  // namespace wq
