// Objects for the ODR guard's own test (tests/CMakeLists.txt): compiled as an ISA's file
// would be (-DWQ_ISA_NS=isa_fixture). Without WQ_FIXTURE_LEAK every inline function is
// inside the ISA namespace and kernels/check_isa_symbols.cmake must accept the object;
// with it, one inline function sits outside and the check must fail.
#include "kernels/isa_namespace.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE
[[gnu::noinline]] inline int inside(int x) { return x * 3 + 1; }
WQ_END_ISA_NAMESPACE
}  // namespace wq

#if defined(WQ_FIXTURE_LEAK)
namespace wq {
[[gnu::noinline]] inline int outside(int x) { return x * 5 + 2; }
}  // namespace wq
int fixture_entry(int x) { return wq::inside(x) + wq::outside(x); }
#else
int fixture_entry(int x) { return wq::inside(x); }
#endif
