# Finds ONNX Runtime's C API headers and sets ONNXRUNTIME_INCLUDE_DIR (the folder that
# holds onnxruntime_c_api.h). Looked for, in order:
#   1. an explicit folder: -DONNXRUNTIME_INCLUDE_DIR=... or the environment variable of
#      the same name;
#   2. the system include path (/usr/include/onnxruntime, /usr/local/include/...);
#   3. headers fetched into this build tree by scripts/fetch_ort_headers.sh: Debian
#      trixie's libonnxruntime-dev .deb (apt download + dpkg -x, nothing installed), then
#      ORT's release tarball where the internet is reachable.

set(ONNXRUNTIME_INCLUDE_DIR "$ENV{ONNXRUNTIME_INCLUDE_DIR}"
    CACHE PATH "Folder holding onnxruntime_c_api.h (empty: search, then fetch)")

function(_ort_headers_ok dir result)
  if(dir AND EXISTS "${dir}/onnxruntime_c_api.h")
    set(${result} TRUE PARENT_SCOPE)
  else()
    set(${result} FALSE PARENT_SCOPE)
  endif()
endfunction()

if(ONNXRUNTIME_INCLUDE_DIR)
  _ort_headers_ok("${ONNXRUNTIME_INCLUDE_DIR}" _ok)
  if(NOT _ok)
    message(FATAL_ERROR "ONNXRUNTIME_INCLUDE_DIR=${ONNXRUNTIME_INCLUDE_DIR} has no onnxruntime_c_api.h; "
                        "point it at the folder that holds ONNX Runtime's headers or unset it")
  endif()
  set(_source "explicit folder")
else()
  find_path(ONNXRUNTIME_SYSTEM_INCLUDE_DIR onnxruntime_c_api.h
            PATH_SUFFIXES onnxruntime onnxruntime/core/session
            DOC "ONNX Runtime headers on the system include path")
  if(ONNXRUNTIME_SYSTEM_INCLUDE_DIR)
    set(_dir "${ONNXRUNTIME_SYSTEM_INCLUDE_DIR}")
    set(_source "system include path")
  else()
    set(_fetch_dir "${CMAKE_BINARY_DIR}/ort-headers")
    file(GLOB_RECURSE _found "${_fetch_dir}/*/onnxruntime_c_api.h")
    if(_found)
      list(GET _found 0 _header)
      get_filename_component(_dir "${_header}" DIRECTORY)
      set(_source "fetched earlier into the build tree")
    else()
      message(STATUS "ONNX Runtime headers: not on this system, fetching into ${_fetch_dir}")
      execute_process(
        COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/../scripts/fetch_ort_headers.sh" "${_fetch_dir}"
        OUTPUT_VARIABLE _out
        RESULT_VARIABLE _rc
        OUTPUT_STRIP_TRAILING_WHITESPACE)
      if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "Could not find or fetch ONNX Runtime's headers. Install libonnxruntime-dev, "
                            "or set ONNXRUNTIME_INCLUDE_DIR to a folder holding onnxruntime_c_api.h")
      endif()
      string(REGEX REPLACE ".*\n" "" _dir "${_out}")
      set(_source "fetched into the build tree")
    endif()
  endif()
  _ort_headers_ok("${_dir}" _ok)
  if(NOT _ok)
    message(FATAL_ERROR "ONNX Runtime headers expected in '${_dir}' but onnxruntime_c_api.h is missing")
  endif()
  set(ONNXRUNTIME_INCLUDE_DIR "${_dir}" CACHE PATH "Folder holding onnxruntime_c_api.h" FORCE)
endif()

file(STRINGS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h" _api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+" ONNXRUNTIME_HEADER_API_VERSION "${_api_line}")
message(STATUS "ONNX Runtime headers (${_source}): ${ONNXRUNTIME_INCLUDE_DIR}, ORT_API_VERSION ${ONNXRUNTIME_HEADER_API_VERSION}")
if(ONNXRUNTIME_HEADER_API_VERSION LESS 18)
  message(FATAL_ERROR "ONNX Runtime headers offer API ${ONNXRUNTIME_HEADER_API_VERSION}; onnx_stopgrad needs >= 18 (ORT 1.18)")
endif()
