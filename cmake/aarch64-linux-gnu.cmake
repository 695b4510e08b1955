# Cross build for aarch64 (Debian multiarch): tests run under qemu-user through ctest.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# scripts/test.sh sets QEMU_CPU=cortex-a72 so the tests run on a NEON-only CPU (qemu's
# default CPU has SVE, which wquant must not assume).
# Debian multiarch puts the arm64 libc in /lib/aarch64-linux-gnu, where qemu finds it
# without -L; "-L /usr/aarch64-linux-gnu" (the cross libc) hangs qemu 7.2 at pthread_create.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
