// <immintrin.h> for the AVX-512 files. GCC 12.2 reports every AVX-512 intrinsic it
// inlines as reading an uninitialised value (its headers self-initialise their
// "undefined" vectors; GCC bug 105593, fixed in 12.3). The state at the header's own
// lines is what counts, so it is silenced for that header only, not for our code.
#pragma once
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
