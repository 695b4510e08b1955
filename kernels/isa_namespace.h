// Every kernel header that defines code (inline functions, templates, types with member
// functions) opens this namespace inside its own, so that what a translation unit
// compiled with one ISA's flags emits never shares a symbol with another ISA's:
//
//   namespace wq::ref {
//   WQ_BEGIN_ISA_NAMESPACE
//   inline float f(float x) { ... }
//   WQ_END_ISA_NAMESPACE
//   }
//
// Why: a non-template inline function (or a template instantiated with the same
// arguments) included in a file compiled with -mavx2 and in one compiled without is ONE
// symbol to the linker, which keeps either copy; a MinSizeRel build linked with lld kept
// the AVX2 copy of ref::block_codec for the scalar table, so the scalar path died with
// an illegal instruction on a CPU without AVX2. With the namespace, the AVX2 copy is
// wq::ref::isa_avx2::block_codec and the scalar one wq::ref::isa_baseline::block_codec.
//
// The namespace is inline, so callers write wq::ref::block_codec everywhere.
// kernels/CMakeLists.txt compiles each ISA's files with -DWQ_ISA_NS=isa_<name> (from
// kernels/isa_list.inc) and checks their objects with kernels/check_isa_symbols.cmake:
// a weak symbol outside the ISA's namespace (or outside its xsimd arch) fails the build.
// Code compiled without ISA flags (scalar table, engine, io, cli, tests) gets
// isa_baseline. Types that cross ISA boundaries (struct Kernels and its arguments,
// kernels/kernels.h) stay outside: they have no code.
#pragma once

#ifndef WQ_ISA_NS
#define WQ_ISA_NS isa_baseline
#endif
#define WQ_BEGIN_ISA_NAMESPACE inline namespace WQ_ISA_NS {
#define WQ_END_ISA_NAMESPACE }
