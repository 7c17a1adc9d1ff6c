"""Copy ONNX Runtime's C/C++ headers and their licence into custom_ops/third_party/onnxruntime.

    python custom_ops/scripts/bundle_ort_headers.py [DEST]

Run when an sdist is made (setup.py's sdist command), so that the sdist builds offline
from the "bundled" header source; the copy is never committed. The headers come from the
first of: the environment variable ONNXRUNTIME_INCLUDE_DIR, the system include path
(/usr/include/onnxruntime, /usr/local/include/onnxruntime), fetch_ort_headers.sh (Debian's
libonnxruntime-dev .deb, then ONNX Runtime's release tarball). The licence is looked for
beside them (LICENSE, or Debian's share/doc/*onnxruntime*/copyright), or taken from
ONNXRUNTIME_LICENSE_FILE. Exits 1 with one line on stderr when either cannot be found.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
CUSTOM_OPS = SCRIPTS.parent
DEFAULT_DEST = CUSTOM_OPS / "third_party" / "onnxruntime"
HEADER = "onnxruntime_c_api.h"
SYSTEM_DIRS = (Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime"))


class BundleError(Exception):
    """The headers or their licence cannot be found (message: one line)."""


def find_headers(fetch_dir: Path) -> tuple[Path, str]:
    """The folder holding onnxruntime_c_api.h, and where it came from."""
    explicit = os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
    if explicit:
        if not (Path(explicit) / HEADER).is_file():
            raise BundleError(f"ONNXRUNTIME_INCLUDE_DIR={explicit} has no {HEADER}")
        return Path(explicit), "the folder ONNXRUNTIME_INCLUDE_DIR named"
    for folder in SYSTEM_DIRS:
        if (folder / HEADER).is_file():
            return folder, f"the system's {folder}"
    # Fetched earlier: by this script, or by a build of the checkout (build/temp.*/custom_ops/ort-headers).
    for header in sorted(fetch_dir.parent.glob(f"**/ort-headers/*/**/{HEADER}")):
        return header.parent, "fetch_ort_headers.sh (fetched earlier)"
    script = str(SCRIPTS / "fetch_ort_headers.sh")
    fetch = subprocess.run(["bash", script, str(fetch_dir)], check=False, capture_output=True, text=True)
    lines = fetch.stdout.strip().splitlines()
    if fetch.returncode != 0 or not lines:
        reasons = [
            line.removeprefix("fetch_ort_headers: ") for line in fetch.stderr.splitlines() if ": " in line
        ]
        why = "; ".join(r for r in reasons if r.startswith(("debian:", "tarball:"))) or "fetch failed"
        raise BundleError(
            "no ONNX Runtime headers to bundle: not in ONNXRUNTIME_INCLUDE_DIR or "
            f"{SYSTEM_DIRS[0]}, and {why}"
        )
    folder = Path(lines[-1])
    return folder, f"fetch_ort_headers.sh ({folder.relative_to(fetch_dir).parts[0]})"


def find_licence(include_dir: Path) -> Path:
    """ONNX Runtime's licence file for headers in ``include_dir``."""
    explicit = os.environ.get("ONNXRUNTIME_LICENSE_FILE")
    if explicit:
        if not Path(explicit).is_file():
            raise BundleError(f"ONNXRUNTIME_LICENSE_FILE={explicit} is not a file")
        return Path(explicit)
    for folder in list(include_dir.resolve().parents)[:3]:
        for candidate in (folder / "LICENSE", folder / "LICENSE.txt"):
            if candidate.is_file():
                return candidate
        for candidate in sorted(folder.glob("share/doc/*onnxruntime*/copyright")):
            return candidate
    raise BundleError(
        f"no licence file beside the ONNX Runtime headers in {include_dir}: "
        "set ONNXRUNTIME_LICENSE_FILE to ONNX Runtime's LICENSE"
    )


def api_version(include_dir: Path) -> str:
    match = re.search(r"^#define ORT_API_VERSION (\d+)", (include_dir / HEADER).read_text(), re.MULTILINE)
    return match.group(1) if match else "unknown"


def bundle(dest: Path, fetch_dir: Path) -> str:
    """Fill ``dest`` with include/, LICENSE and SOURCE; return a one-line summary."""
    include_dir, origin = find_headers(fetch_dir)
    licence = find_licence(include_dir)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(include_dir, staging / "include", ignore=shutil.ignore_patterns("*.a", "*.so*", "*.dll"))
    shutil.copy2(licence, staging / "LICENSE")
    version = api_version(include_dir)
    (staging / "SOURCE").write_text(
        f"ONNX Runtime C/C++ headers (ORT_API_VERSION {version}), MIT licence (LICENSE).\n"
        f"Bundled by custom_ops/scripts/bundle_ort_headers.py from {origin}; LICENSE is {licence.name}.\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return f"bundled ONNX Runtime headers (API {version}) from {origin} into {dest}"


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEST
    try:
        print(bundle(dest.resolve(), CUSTOM_OPS.parent / "build" / "ort-headers"))
    except (BundleError, OSError) as exc:
        print(f"bundle_ort_headers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
