#include "io/onnx_hooks.h"

namespace wq {
namespace {
OnnxHooks g_hooks;
bool g_installed = false;
}  // namespace

void install_onnx_hooks(const OnnxHooks& hooks) {
  g_hooks = hooks;
  g_installed = true;
}

const OnnxHooks* onnx_hooks() { return g_installed ? &g_hooks : nullptr; }

}  // namespace wq
