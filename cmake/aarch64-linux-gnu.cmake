# CMake toolchain file: cross-compiles for aarch64 (ARM64) Linux on an x86-64 Debian machine with
# Debian's cross compiler (g++-aarch64-linux-gnu) and the arm64 -dev packages installed side by
# side (multiarch: `dpkg --add-architecture arm64`, headers and libraries under
# /usr/include/aarch64-linux-gnu and /usr/lib/aarch64-linux-gnu). scripts/cross-aarch64 installs
# all that and uses this file; see docs/arm64.md.
#
# Tests registered with ctest run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR); the CPU it
# emulates comes from the QEMU_CPU environment variable (e.g. max, cortex-a57).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# No sysroot: with CMAKE_LIBRARY_ARCHITECTURE, find_library and find_package look in
# /usr/lib/aarch64-linux-gnu (never in the host's x86_64 directory), and find_program finds the
# host's programs (protoc, grpc_cpp_plugin), which is what code generation needs.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# pkg-config of the target's .pc files.
set(PKG_CONFIG_EXECUTABLE aarch64-linux-gnu-pkg-config CACHE FILEPATH "pkg-config for aarch64")

find_program(QWEN_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(QWEN_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${QWEN_QEMU_AARCH64})
endif()
