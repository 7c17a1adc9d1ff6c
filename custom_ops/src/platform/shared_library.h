// Loading a shared library and looking up a symbol at run time: dlopen/dlsym on POSIX,
// LoadLibrary/GetProcAddress on Windows. Nothing is ever unloaded.
#pragma once

namespace onnx_stopgrad {

// Opaque handle of a loaded library; nullptr when it could not be loaded.
using LibraryHandle = void*;

// Loads `name` (e.g. "libcuda.so.1", "nvcuda.dll") with local symbol scope; nullptr on failure.
LibraryHandle LoadSharedLibrary(const char* name) noexcept;

// Address of `symbol` in `library`, or nullptr.
void* FindSymbol(LibraryHandle library, const char* symbol) noexcept;

// Keeps the library holding this code loaded until the process exits, even after ONNX
// Runtime unloads it (Linux does this at link time with `-z nodelete`; macOS and Windows
// here, at run time). Best effort: failures are ignored.
void PinThisLibrary() noexcept;

}  // namespace onnx_stopgrad
