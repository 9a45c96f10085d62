#!/usr/bin/env python3
"""Prepare this checkout to build mlx-rs on Linux (CPU or NVIDIA CUDA back end).

mlx-rs 0.33 builds out of the box on macOS only: its mlx-sys 0.7.0 build script
clones and compiles MLX and links Apple frameworks. On Linux we instead use the
prebuilt MLX 0.32.4 that PyPI publishes (headers, CMake config and libmlx.so)
and a locally patched copy of mlx-sys that builds only mlx-c against it.

What this script does, each step skipped when it is already done:
  1. downloads `mlx-cpu==0.32.4` (always: it is what we compile and link against)
     and, with `--backend cuda`, `mlx-cuda-13==0.32.4` with its NVIDIA runtime
     wheels, unpacked under `.mlx/` (git-ignored);
  2. copies mlx-sys 0.7.0 out of cargo's registry cache into `.mlx/mlx-sys-0.7.0`
     and patches it for Linux (nothing of it is ever committed);
  3. writes `.cargo/config.toml` (git-ignored): the `[patch.crates-io]` entry,
     `MLX_DIR`, and an rpath so binaries find libmlx.so without LD_LIBRARY_PATH;
     where a single-threaded OpenBLAS is installed (Debian: libopenblas0-serial),
     a link to it, behind a guard compiled from scripts/blas_guard.c (a lock
     that makes threads calling it at once take turns: that build is not safe
     for concurrent callers).

Why OpenBLAS: the wheel's libmlx.so takes its CPU matrix products
(`cblas_sgemm`) from the Netlib reference BLAS it bundles, about 1 GFLOP/s
here. A binary that links OpenBLAS itself puts OpenBLAS's `cblas_sgemm` first
in the process's symbol lookup, ahead of libmlx's own dependency, so MLX's
dense products on the CPU run on it (measured 30-80x faster from 16 rows:
docs/PERFORMANCE.md). Only a single-threaded build: the threaded one's fork
handler joins its worker threads and hung a test that starts a process (its
python tool) in our process. `MLX_HARMONY_OPENBLAS=off` leaves it out; a path
names another single-threaded libopenblas.so.0.

The CPU and CUDA builds of libmlx 0.32.4 export the same C++ API, so one build
runs on both: the back end is picked at run time by which libmlx.so the loader
finds (the rpath written here, or LD_LIBRARY_PATH, which takes precedence).

On macOS the script does nothing: stock mlx-rs (Metal + Accelerate) is used.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MLX_VERSION = "0.32.4"
MLX_SYS_VERSION = "0.7.0"
ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mlx"

# Bumped whenever the patch below changes, so old patched copies are remade.
PATCH_REVISION = "5"


def say(message: str) -> None:
    print(f"[setup-mlx] {message}", flush=True)


def fail(message: str) -> "NoReturn":  # type: ignore[name-defined]
    print(f"[setup-mlx] error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


# --------------------------------------------------------------------------- wheels


def fetch_wheel(requirement: str, dest: Path, with_deps: bool) -> None:
    """Install `requirement` (a pinned wheel) into `dest` unless already there."""
    marker = dest / ".installed"
    if marker.is_file() and marker.read_text().strip() == requirement:
        say(f"{requirement}: already in {dest.relative_to(ROOT)}")
        return
    if dest.exists():
        shutil.rmtree(dest)
    with tempfile.TemporaryDirectory(prefix="mlx-wheel-") as tmp:
        say(f"{requirement}: downloading from PyPI")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--dest", tmp, requirement]
        if not with_deps:
            cmd.insert(4, "--no-deps")
        try:
            run(cmd)
        except subprocess.CalledProcessError:
            fail(f"pip could not download {requirement}; check that PyPI is reachable "
                 "(pip's own message is above)")
        dest.mkdir(parents=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            # A wheel is a zip file; unpacking it is all an install does for these
            # data-only packages, and it needs no virtual environment.
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(dest)
    # zipfile drops the executable bits; shared libraries need none, but keep them readable.
    marker.write_text(requirement + "\n")
    say(f"{requirement}: unpacked into {dest.relative_to(ROOT)}")


# --------------------------------------------------------------------------- mlx-sys


def cargo_home() -> Path:
    return Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))


def find_registry_source() -> Path | None:
    candidates = sorted((cargo_home() / "registry" / "src").glob(f"*/mlx-sys-{MLX_SYS_VERSION}"))
    return candidates[0] if candidates else None


def registry_source() -> Path:
    found = find_registry_source()
    if found and (found / "build.rs").is_file():
        return found
    say(f"mlx-sys {MLX_SYS_VERSION}: fetching its source from crates.io")
    with tempfile.TemporaryDirectory(prefix="mlx-sys-fetch-") as tmp:
        (Path(tmp) / "src").mkdir()
        (Path(tmp) / "src" / "lib.rs").write_text("")
        (Path(tmp) / "Cargo.toml").write_text(
            '[package]\nname = "mlx-sys-fetch"\nversion = "0.0.0"\nedition = "2021"\n'
            f'[dependencies]\nmlx-sys = {{ version = "={MLX_SYS_VERSION}", default-features = false }}\n'
        )
        try:
            run(["cargo", "fetch", "--quiet"], cwd=tmp)
        except (subprocess.CalledProcessError, FileNotFoundError):
            fail("`cargo fetch` of mlx-sys failed; is cargo installed and crates.io reachable?")
    found = find_registry_source()
    if not found:
        fail(f"mlx-sys {MLX_SYS_VERSION} was fetched but not found under {cargo_home()}/registry/src")
    return found


# Force-included into every C++ file of mlx-c: GCC 12's libstdc++ has no <format>,
# and mlx-c only needs std::format for a few error messages.
FORMAT_FALLBACK_HEADER = """\
// Written by mlx-harmony's scripts/setup-mlx.py: a small std::format for
// standard libraries that lack <format> (libstdc++ before GCC 13).
#pragma once
#if defined(__cplusplus) && !__has_include(<format>)
#include <sstream>
#include <string>
#include <string_view>
namespace std {
inline void mlxh_format_into(ostringstream& out, string_view pattern) { out << pattern; }
template <class First, class... Rest>
void mlxh_format_into(ostringstream& out, string_view pattern, const First& first,
                      const Rest&... rest) {
  const auto hole = pattern.find("{}");
  if (hole == string_view::npos) {
    out << pattern;
    return;
  }
  out << pattern.substr(0, hole) << first;
  mlxh_format_into(out, pattern.substr(hole + 2), rest...);
}
template <class... Args>
string format(string_view pattern, const Args&... args) {
  ostringstream out;
  mlxh_format_into(out, pattern, args...);
  return out.str();
}
}  // namespace std
#endif
"""

# mlx-c declares float16_t/bfloat16_t only on ARM. MLX reads and writes half
# precision values as raw bits, so a 16-bit integer type is exact elsewhere.
HALF_H_FALLBACK = """
#if !defined(HAS_FLOAT16) && !defined(__aarch64__)
#include <stdint.h>
#define HAS_FLOAT16
typedef uint16_t float16_t;
#endif

#if !defined(HAS_BFLOAT16) && !defined(__aarch64__)
#include <stdint.h>
#define HAS_BFLOAT16
typedef uint16_t bfloat16_t;
#endif
"""

# Replaces the Apple-only build when MLX_DIR names an installed MLX (the wheel's mlx/).
BUILD_RS_INSTALLED_MLX = r'''

/// Added by mlx-harmony's scripts/setup-mlx.py: build mlx-c only, against the
/// MLX installed at `MLX_DIR` (PyPI's mlx-cpu wheel), and link it dynamically.
fn build_and_link_against_installed_mlx(mlx_dir: &Path) {
    let mlx_c_root = Path::new("src/mlx-c");
    let shim = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("std_format_fallback.h");
    let mut config = Config::new(mlx_c_root);
    config.define("MLX_C_USE_SYSTEM_MLX", "ON");
    config.define("MLX_DIR", mlx_dir.join("share/cmake/MLX"));
    config.define("MLX_C_BUILD_EXAMPLES", "OFF");
    config.define("CMAKE_BUILD_TYPE", "Release");
    config.profile("Release");
    config.cxxflag(format!("-include {}", shim.display()));
    let dst = config.build();

    println!("cargo:rustc-link-search=native={}/lib", dst.display());
    println!("cargo:rustc-link-search=native={}/build", dst.display());
    println!("cargo:rustc-link-lib=static=mlxc");
    println!("cargo:rustc-link-search=native={}/lib", mlx_dir.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo::metadata=include={}", mlx_dir.join("include").display());
    println!("cargo::metadata=version=''' + MLX_VERSION + r'''");
}
'''


def patch_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        fail(f"cannot patch {path}: the expected text is not there (has mlx-sys {MLX_SYS_VERSION} changed?)")
    path.write_text(text.replace(old, new, 1))


def make_patched_mlx_sys(dest: Path) -> None:
    marker = dest / ".mlx-harmony-patch"
    if marker.is_file() and marker.read_text().strip() == PATCH_REVISION:
        say(f"mlx-sys {MLX_SYS_VERSION}: patched copy already in {dest.relative_to(ROOT)}")
        return
    source = registry_source()
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".cargo-ok"))

    build_rs = dest / "build.rs"
    # Only the Apple build path uses some of its imports and helpers.
    build_rs.write_text("#![allow(unused_imports, dead_code)]\n" + build_rs.read_text())
    patch_text(
        build_rs,
        "fn build_and_link_mlx_c() {\n",
        "fn build_and_link_mlx_c() {\n"
        "    println!(\"cargo:rerun-if-env-changed=MLX_DIR\");\n"
        "    if let Some(mlx_dir) = env::var_os(\"MLX_DIR\") {\n"
        "        return build_and_link_against_installed_mlx(Path::new(&mlx_dir));\n"
        "    }\n",
    )
    build_rs.write_text(build_rs.read_text() + BUILD_RS_INSTALLED_MLX)

    patch_text(
        dest / "src/mlx-c/mlx/c/half.h",
        "#ifdef __cplusplus\n}\n#endif\n\n#endif",
        HALF_H_FALLBACK + "\n#ifdef __cplusplus\n}\n#endif\n\n#endif",
    )
    patch_text(
        dest / "src/bindgen_config.rs",
        "bindgen::Builder::default()\n",
        "bindgen::Builder::default()\n"
        "            .new_type_alias(\"float16_t\")\n"
        "            .derive_default(true)\n",
    )
    # mlx-c 0.7.0 was written for MLX 0.32.2; 0.32.4 gave gather_qmm a
    # `global_scale` argument before `sorted_indices`. The C function keeps its
    # signature (no global scale, as before).
    patch_text(
        dest / "src/mlx-c/mlx/c/ops.cpp",
        "            std::string(mode),\n            sorted_indices,\n",
        "            std::string(mode),\n            std::nullopt,\n            sorted_indices,\n",
    )
    (dest / "std_format_fallback.h").write_text(FORMAT_FALLBACK_HEADER)
    marker.write_text(PATCH_REVISION + "\n")
    say(f"mlx-sys {MLX_SYS_VERSION}: patched copy made in {dest.relative_to(ROOT)}")


# --------------------------------------------------------------------------- cargo config


def runtime_library_dirs(backend: str) -> list[Path]:
    if backend == "cpu":
        return [STATE / "cpu" / "mlx" / "lib"]
    cuda = STATE / "cuda"
    dirs = [cuda / "mlx" / "lib"]
    # The NVIDIA runtime wheels (cuBLAS, cuDNN, NVRTC, ...) each carry a lib/ folder.
    dirs += sorted(p for p in (cuda / "nvidia").glob("*/lib") if p.is_dir())
    return dirs


def single_threaded(library: Path) -> bool:
    """Whether `library` is an OpenBLAS built without threads
    (openblas_get_parallel() == 0)."""
    import ctypes
    try:
        return ctypes.CDLL(str(library)).openblas_get_parallel() == 0
    except (OSError, AttributeError):
        return False


def openblas() -> Path | None:
    """The single-threaded OpenBLAS library to link (see the module's doc), if any."""
    asked = os.environ.get("MLX_HARMONY_OPENBLAS", "")
    if asked.lower() == "off":
        return None
    if asked:
        if not single_threaded(Path(asked)):
            fail(f"MLX_HARMONY_OPENBLAS={asked}: not a single-threaded OpenBLAS library "
                 "(name a libopenblas.so.0 built without threads, or 'off')")
        return Path(asked)
    arch = platform.machine()
    for folder in (f"/usr/lib/{arch}-linux-gnu/openblas-serial", f"/usr/lib/{arch}-linux-gnu",
                   "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        candidate = Path(folder) / "libopenblas.so.0"
        if candidate.is_file() and single_threaded(candidate):
            return candidate
    return None


def build_blas_guard() -> Path:
    """scripts/blas_guard.c compiled into .mlx/blas-guard/ (again when the
    source changed): the lock that makes concurrent callers of the
    single-threaded OpenBLAS take turns (see that file)."""
    source = ROOT / "scripts" / "blas_guard.c"
    folder = STATE / "blas-guard"
    library = folder / "libmlx_harmony_blas_guard.so"
    stamp = folder / "source.sha256"
    # Named by its soname (not its path) in the binaries, so that a binary
    # run elsewhere (the GPU bundle) finds it on its library path.
    flags = ["-O2", "-fPIC", "-shared", "-Wall", "-Werror", f"-Wl,-soname,{library.name}"]
    digest = hashlib.sha256(source.read_bytes() + " ".join(flags).encode()).hexdigest()
    if library.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return library
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        fail("no C compiler (cc) to build the OpenBLAS guard; install one "
             "(Debian: `apt-get install gcc`; Rust links with it too) or set MLX_HARMONY_OPENBLAS=off")
    folder.mkdir(parents=True, exist_ok=True)
    run([compiler, *flags, "-o", str(library), str(source), "-ldl", "-lpthread"])
    stamp.write_text(digest)
    say(f"OpenBLAS guard: built {library.relative_to(ROOT)}")
    return library


def write_cargo_config(backend: str, mlx_sys: Path) -> None:
    build_mlx = STATE / "cpu" / "mlx"
    rpath = ":".join(str(p) for p in runtime_library_dirs(backend))
    # Linked whether or not the binary calls them (--no-as-needed), the guard
    # first: the loader then finds the guard's cblas_sgemm before OpenBLAS's,
    # and OpenBLAS's before the one libmlx.so brings; the guard calls on to
    # OpenBLAS's (scripts/blas_guard.c says why).
    blas = openblas()
    guard = build_blas_guard() if blas else None
    # The guard's and OpenBLAS's folders in the rpath too: the loader looks
    # both up by their sonames (OpenBLAS's a threaded build elsewhere may
    # share), which LD_LIBRARY_PATH can also answer where the binary runs
    # away from this checkout (scripts/gpu-unpack).
    link = (f', "-C", "link-arg=-Wl,--push-state,--no-as-needed", "-C", "link-arg={guard}", '
            f'"-C", "link-arg={blas}", "-C", "link-arg=-Wl,--pop-state", '
            f'"-C", "link-arg=-Wl,-rpath,{guard.parent}:{blas.parent}"'
            if blas and guard else "")
    content = (
        "# Written by scripts/setup-mlx.py for this checkout; re-run it rather than editing.\n"
        f"# Back end: {backend} (MLX {MLX_VERSION}); BLAS for MLX's CPU products: "
        f"{f'{blas}, behind {guard.name}' if blas else 'the reference BLAS of the MLX wheel (no single-threaded OpenBLAS found)'}.\n"
        "[patch.crates-io]\n"
        f'mlx-sys = {{ path = "{mlx_sys}" }}\n\n'
        "[env]\n"
        f'MLX_DIR = "{build_mlx}"\n'
        f'MLX_HARMONY_MLX_BACKEND = "{backend}"\n\n'
        "[target.'cfg(target_os = \"linux\")']\n"
        # The cfg tells crates/core/Cargo.toml that MLX may now be built.
        f'rustflags = ["--cfg", "mlx_harmony_mlx_ready", "-C", "link-arg=-Wl,-rpath,{rpath}"{link}]\n\n'
        # Doctests are linked by rustdoc, which reads its own flags.
        "[build]\n"
        f'rustdocflags = ["--cfg", "mlx_harmony_mlx_ready", "-C", "link-arg=-Wl,-rpath,{rpath}"{link}]\n'
    )
    config = ROOT / ".cargo" / "config.toml"
    if config.is_file() and config.read_text() == content:
        say(".cargo/config.toml: up to date")
        return
    config.parent.mkdir(exist_ok=True)
    config.write_text(content)
    say(f".cargo/config.toml: written (back end {backend}; "
        f"{'OpenBLAS ' + str(blas) if blas else 'no single-threaded OpenBLAS (Debian: libopenblas0-serial): CPU matrix products on the reference BLAS'})")


# --------------------------------------------------------------------------- checks


def check_build_tools() -> None:
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    # bindgen needs libclang at build time.
    if not any(Path("/usr/lib").glob("llvm-*/lib/libclang*.so*")) and not any(
        Path("/usr/lib").glob("*/libclang*.so*")
    ) and "LIBCLANG_PATH" not in os.environ:
        missing.append("libclang-dev")
    if missing:
        fail("missing build tools: " + ", ".join(missing)
             + f". Install them (Debian/Ubuntu: `apt-get install {' '.join(missing)}`) and run this again.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["cpu", "cuda"],
                        default=os.environ.get("MLX_HARMONY_BACKEND", "cpu"),
                        help="which libmlx the binaries load at run time (default: cpu, "
                             "or $MLX_HARMONY_BACKEND)")
    parser.add_argument("--check", action="store_true",
                        help="only report whether set-up is complete; exit 1 if not")
    parser.add_argument("--find-openblas", action="store_true",
                        help="only print the single-threaded OpenBLAS the set-up would link; "
                             "exit 1 if there is none")
    args = parser.parse_args()

    if platform.system() == "Darwin":
        say("macOS: stock mlx-rs (Metal + Accelerate) builds as is; nothing to do")
        return
    if platform.system() != "Linux":
        fail(f"unsupported platform {platform.system()}: mlx-harmony builds on macOS and Linux")

    if args.find_openblas:
        blas = openblas()
        print(blas or "no single-threaded OpenBLAS found")
        sys.exit(0 if blas else 1)
    mlx_sys = STATE / f"mlx-sys-{MLX_SYS_VERSION}"
    if args.check:
        ok = (ROOT / ".cargo" / "config.toml").is_file() and (mlx_sys / ".mlx-harmony-patch").is_file()
        say("set-up complete" if ok else "set-up missing: run scripts/setup-mlx.py")
        sys.exit(0 if ok else 1)

    check_build_tools()
    fetch_wheel(f"mlx-cpu=={MLX_VERSION}", STATE / "cpu", with_deps=False)
    if args.backend == "cuda":
        fetch_wheel(f"mlx-cuda-13=={MLX_VERSION}", STATE / "cuda", with_deps=True)
    make_patched_mlx_sys(mlx_sys)
    write_cargo_config(args.backend, mlx_sys)
    digest = hashlib.sha256((ROOT / ".cargo" / "config.toml").read_bytes()).hexdigest()[:12]
    say(f"ready: `cargo build` now uses MLX {MLX_VERSION} ({args.backend}); config {digest}")


if __name__ == "__main__":
    main()
