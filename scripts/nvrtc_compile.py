#!/usr/bin/env python3
"""Compile CUDA sources with NVRTC through ctypes -- no GPU, no nvcc, no CUDA toolkit needed.

Usage: nvrtc_compile.py DIR [--lib PATH] [--arch ARCH ...] [--verbose]

DIR holds `*.cu` files and `manifest.tsv` (file, name, multi_name, n_args), as written by the
`dump_cuda_sources` test. Each source is compiled once per `--arch` (default: NVRTC's default
architecture -- what `cudarc::nvrtc::compile_ptx` uses -- and `sm_90`, which makes NVRTC also run
the PTX assembler for Hopper). For PTX targets the script checks that both entry points exist
with `n_args` and 3 parameters. Exit status 1 if anything fails.

libnvrtc comes from `pip install nvidia-cuda-nvrtc-cu12`; pass --lib or set NVRTC_LIB, else it is
looked up in the installed `nvidia.cuda_nvrtc` package.
"""
import argparse
import ctypes
import glob
import os
import re
import sys


def find_lib(explicit):
    if explicit:
        return explicit
    if os.environ.get("NVRTC_LIB"):
        return os.environ["NVRTC_LIB"]
    try:
        import nvidia.cuda_nvrtc  # type: ignore

        # a namespace package: no __file__, one entry in __path__
        base = list(nvidia.cuda_nvrtc.__path__)[0]
        hits = sorted(glob.glob(os.path.join(base, "lib", "libnvrtc.so*")))
        hits = [h for h in hits if ".alt." not in h]
        if hits:
            return hits[0]
    except ImportError:
        pass
    return "libnvrtc.so"


class Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"{major.value}.{minor.value}"

    def _check(self, r, what):
        if r != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(r).decode()}")

    def compile(self, src, name, options):
        """Returns (ok, log, output) where output is PTX text (compute_*) or CUBIN bytes."""
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            r = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            n = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            buf = ctypes.create_string_buffer(n.value)
            self.lib.nvrtcGetProgramLog(prog, buf)
            log = buf.value.decode(errors="replace")
            if r != 0:
                return False, log, None
            cubin = any(o.startswith("--gpu-architecture=sm_") for o in options)
            if cubin:
                self.lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
                out = ctypes.create_string_buffer(n.value)
                self.lib.nvrtcGetCUBIN(prog, out)
                return True, log, out.raw
            self.lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
            out = ctypes.create_string_buffer(n.value)
            self.lib.nvrtcGetPTX(prog, out)
            return True, log, out.value.decode()
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def entry_params(ptx, name):
    m = re.search(r"\.entry\s+" + re.escape(name) + r"\s*\((.*?)\)", ptx, re.S)
    if not m:
        return None
    return len(re.findall(r"\.param\s", m.group(1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--lib")
    ap.add_argument("--arch", action="append", help="e.g. compute_70, sm_90, default")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    archs = a.arch or ["default", "sm_90"]
    nv = Nvrtc(find_lib(a.lib))
    rows = []
    with open(os.path.join(a.dir, "manifest.tsv")) as f:
        next(f)
        for line in f:
            file, name, multi, nargs = line.rstrip("\n").split("\t")
            rows.append((file, name, multi, int(nargs)))
    failures = 0
    warned = 0
    for file, name, multi, nargs in rows:
        src = open(os.path.join(a.dir, file)).read()
        for arch in archs:
            # the same defaults as cudarc (IEEE div/sqrt, no fast math); -ptxas-v for sm_*
            opts = [] if arch == "default" else [f"--gpu-architecture={arch}"]
            ok, log, out = nv.compile(src, file, opts)
            problems = []
            if not ok:
                problems.append("compile failed")
            elif isinstance(out, str):
                got = entry_params(out, name)
                got_multi = entry_params(out, multi)
                if got != nargs:
                    problems.append(f"{name}: {got} params, expected {nargs}")
                if got_multi != 3:
                    problems.append(f"{multi}: {got_multi} params, expected 3")
            elif not out:
                problems.append("empty cubin")
            real_warnings = [
                l for l in log.splitlines()
                if "warning" in l and "Architectures prior to" not in l
            ]
            if real_warnings:
                warned += 1
            if problems or a.verbose or real_warnings:
                status = "FAIL" if problems else "ok"
                print(f"{status} {file} [{arch}] {'; '.join(problems)}")
                if log.strip():
                    print("  " + log.strip().replace("\n", "\n  "))
            failures += bool(problems)
    total = len(rows) * len(archs)
    print(
        f"NVRTC {nv.version}: {total - failures}/{total} compilations ok "
        f"({len(rows)} sources x {len(archs)} targets: {', '.join(archs)}); "
        f"{warned} with warnings"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
