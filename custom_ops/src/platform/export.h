// How the library's one entry point, RegisterCustomOps, is exported on each platform.
#pragma once

#ifdef _WIN32
#define ONNX_STOPGRAD_EXPORT __declspec(dllexport)
#else
#define ONNX_STOPGRAD_EXPORT __attribute__((visibility("default")))
#endif
