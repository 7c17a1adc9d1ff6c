# Toolchain file: build the library with zig's clang against an old glibc, so that it runs
# on every Linux with glibc >= 2.28 (manylinux_2_28) whatever the build machine's glibc.
#   pip install ziglang
#   ONNX_STOPGRAD_ZIG=$(python -c "import ziglang, os; print(os.path.dirname(ziglang.__file__) + '/zig')") \
#     cmake -S custom_ops -B build/zig -DCMAKE_TOOLCHAIN_FILE=custom_ops/cmake/zig-toolchain.cmake
# ONNX_STOPGRAD_ZIG_TARGET picks another target (default x86_64-linux-gnu.2.28; e.g.
# aarch64-linux-gnu.2.28). `make dist` does this. zig links its own libc++ statically.
set(CMAKE_CXX_COMPILER "${CMAKE_CURRENT_LIST_DIR}/../scripts/zig-c++")
set(ONNX_STOPGRAD_ZIG ON)
