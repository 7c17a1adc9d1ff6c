# Finds ONNX Runtime's C API headers and sets ONNX_STOPGRAD_ORT_INCLUDE_DIR (the folder that
# holds onnxruntime_c_api.h). Decided again on every configure, so a cache from an earlier
# build never hides a new choice.
#
# An explicit folder wins and is the only one tried: the environment variable
# ONNXRUNTIME_INCLUDE_DIR, else -DONNXRUNTIME_INCLUDE_DIR=... . Otherwise the sources named
# in ONNX_STOPGRAD_HEADER_SOURCES (environment variable or -D; default below) are tried in
# order:
#   bundled  custom_ops/third_party/onnxruntime/include: put into every sdist when it is made
#   system   onnxruntime_c_api.h on the compiler's include path (e.g. Debian's libonnxruntime-dev)
#   debian   Debian trixie's libonnxruntime-dev .deb, fetched into the build tree (network)
#   tarball  ONNX Runtime's release tarball from GitHub, fetched into the build tree (network)
# When none has them, the error says why each source failed.

set(ONNXRUNTIME_INCLUDE_DIR "" CACHE PATH "Folder holding onnxruntime_c_api.h (empty: try the header sources)")
set(ONNX_STOPGRAD_HEADER_SOURCES "bundled;system;debian;tarball"
    CACHE STRING "Where to look for ONNX Runtime's headers, in order (bundled, system, debian, tarball)")
set(ONNX_STOPGRAD_BUNDLED_ORT_DIR "${CMAKE_CURRENT_LIST_DIR}/../third_party/onnxruntime/include")
get_filename_component(ONNX_STOPGRAD_BUNDLED_ORT_DIR "${ONNX_STOPGRAD_BUNDLED_ORT_DIR}" ABSOLUTE)

function(_ort_try_bundled dir_out reason_out)
  if(EXISTS "${ONNX_STOPGRAD_BUNDLED_ORT_DIR}/onnxruntime_c_api.h")
    set(${dir_out} "${ONNX_STOPGRAD_BUNDLED_ORT_DIR}" PARENT_SCOPE)
  else()
    set(${reason_out} "no ${ONNX_STOPGRAD_BUNDLED_ORT_DIR}/onnxruntime_c_api.h (only sdists carry it)" PARENT_SCOPE)
  endif()
endfunction()

function(_ort_try_system dir_out reason_out)
  unset(ONNX_STOPGRAD_SYSTEM_ORT_DIR CACHE)  # searched afresh every time
  find_path(ONNX_STOPGRAD_SYSTEM_ORT_DIR onnxruntime_c_api.h PATH_SUFFIXES onnxruntime onnxruntime/core/session)
  if(ONNX_STOPGRAD_SYSTEM_ORT_DIR)
    set(${dir_out} "${ONNX_STOPGRAD_SYSTEM_ORT_DIR}" PARENT_SCOPE)
  else()
    set(${reason_out} "no onnxruntime_c_api.h on the include path (e.g. /usr/include/onnxruntime)" PARENT_SCOPE)
  endif()
  unset(ONNX_STOPGRAD_SYSTEM_ORT_DIR CACHE)
endfunction()

# debian / tarball: reuse what an earlier configure of this build tree fetched, else fetch.
function(_ort_try_fetch source dir_out reason_out)
  set(fetch_dir "${CMAKE_BINARY_DIR}/ort-headers")
  file(GLOB_RECURSE found "${fetch_dir}/${source}/onnxruntime_c_api.h")
  if(found)
    list(GET found 0 header)
    get_filename_component(dir "${header}" DIRECTORY)
    set(${dir_out} "${dir}" PARENT_SCOPE)
    return()
  endif()
  find_program(ONNX_STOPGRAD_BASH bash)
  if(NOT ONNX_STOPGRAD_BASH)
    set(${reason_out} "bash not found to run scripts/fetch_ort_headers.sh" PARENT_SCOPE)
    return()
  endif()
  message(STATUS "ONNX Runtime headers: fetching (${source}) into ${fetch_dir}")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -E env "ORT_HEADER_SOURCES=${source}"
            "${ONNX_STOPGRAD_BASH}" "${CMAKE_CURRENT_LIST_DIR}/../scripts/fetch_ort_headers.sh" "${fetch_dir}"
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err
    RESULT_VARIABLE rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0)
    string(REGEX REPLACE ".*\n" "" dir "${out}")
    set(${dir_out} "${dir}" PARENT_SCOPE)
    return()
  endif()
  # The script says why on stderr as "fetch_ort_headers: <source>: <reason>".
  string(REGEX MATCHALL "fetch_ort_headers: ${source}: [^\n]*" why "${err}")
  if(why)
    list(GET why -1 why)
    string(REPLACE "fetch_ort_headers: ${source}: " "" why "${why}")
  else()
    set(why "scripts/fetch_ort_headers.sh failed (exit ${rc})")
  endif()
  set(${reason_out} "${why}" PARENT_SCOPE)
endfunction()

if(DEFINED ENV{ONNXRUNTIME_INCLUDE_DIR} AND NOT "$ENV{ONNXRUNTIME_INCLUDE_DIR}" STREQUAL "")
  set(_explicit "$ENV{ONNXRUNTIME_INCLUDE_DIR}")
  set(_explicit_from "environment variable ONNXRUNTIME_INCLUDE_DIR")
elseif(ONNXRUNTIME_INCLUDE_DIR)
  set(_explicit "${ONNXRUNTIME_INCLUDE_DIR}")
  set(_explicit_from "-DONNXRUNTIME_INCLUDE_DIR")
endif()

if(DEFINED _explicit)
  if(NOT EXISTS "${_explicit}/onnxruntime_c_api.h")
    message(FATAL_ERROR "${_explicit_from}=${_explicit} has no onnxruntime_c_api.h: point it at the folder "
                        "that holds ONNX Runtime's headers, or unset it to try the other header sources")
  endif()
  set(ONNX_STOPGRAD_ORT_INCLUDE_DIR "${_explicit}")
  set(_source "${_explicit_from}")
else()
  set(_sources "${ONNX_STOPGRAD_HEADER_SOURCES}")
  if(DEFINED ENV{ONNX_STOPGRAD_HEADER_SOURCES})
    set(_sources "$ENV{ONNX_STOPGRAD_HEADER_SOURCES}")
  endif()
  string(REGEX REPLACE "[ ,]+" ";" _sources "${_sources}")
  list(REMOVE_ITEM _sources "")
  set(_reasons "")
  foreach(_candidate IN LISTS _sources)
    unset(_dir)
    unset(_why)
    if(_candidate STREQUAL "bundled")
      _ort_try_bundled(_dir _why)
    elseif(_candidate STREQUAL "system")
      _ort_try_system(_dir _why)
    elseif(_candidate STREQUAL "debian" OR _candidate STREQUAL "tarball")
      _ort_try_fetch("${_candidate}" _dir _why)
    else()
      set(_why "unknown source (known: bundled, system, debian, tarball)")
    endif()
    if(DEFINED _dir AND EXISTS "${_dir}/onnxruntime_c_api.h")
      set(ONNX_STOPGRAD_ORT_INCLUDE_DIR "${_dir}")
      set(_source "${_candidate}")
      break()
    endif()
    if(NOT DEFINED _why)
      set(_why "no onnxruntime_c_api.h in '${_dir}'")
    endif()
    string(APPEND _reasons "\n  ${_candidate}: ${_why}")
  endforeach()
  if(NOT DEFINED ONNX_STOPGRAD_ORT_INCLUDE_DIR)
    if(_sources STREQUAL "")
      set(_reasons "\n  (ONNX_STOPGRAD_HEADER_SOURCES names no source)")
    endif()
    message(FATAL_ERROR "ONNX Runtime's C API headers were not found.${_reasons}\n"
                        "Set ONNXRUNTIME_INCLUDE_DIR to a folder holding onnxruntime_c_api.h (e.g. the "
                        "include/ folder of an onnxruntime release), or build from the sdist, which bundles them.")
  endif()
endif()

file(STRINGS "${ONNX_STOPGRAD_ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+" ONNXRUNTIME_HEADER_API_VERSION "${_api_line}")
message(STATUS "ONNX Runtime headers (${_source}): ${ONNX_STOPGRAD_ORT_INCLUDE_DIR}, ORT_API_VERSION ${ONNXRUNTIME_HEADER_API_VERSION}")
if(ONNXRUNTIME_HEADER_API_VERSION LESS 18)
  message(FATAL_ERROR "ONNX Runtime headers in ${ONNX_STOPGRAD_ORT_INCLUDE_DIR} offer API "
                      "${ONNXRUNTIME_HEADER_API_VERSION}; onnx_stopgrad needs >= 18 (ONNX Runtime 1.18)")
endif()
