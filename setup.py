"""Build the ichkit._core extension with CMake (setuptools drives it, like pybind11's cmake_example).

If ICHKIT_CMAKE_BUILD_DIR names a configured CMake build tree (the set-up script's), the extension
is built there and copied, so the C++ code is compiled once for the CLI, tests and Python.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        dest = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = os.environ.get("ICHKIT_CMAKE_BUILD_DIR")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        if build_dir:
            build_dir = Path(build_dir).resolve()
        else:
            build_dir = Path(self.build_temp).resolve() / "cmake"
            build_dir.mkdir(parents=True, exist_ok=True)
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.check_call(
                ["cmake", str(ROOT), *gen, "-DCMAKE_BUILD_TYPE=Release", "-DICHKIT_BUILD_PYTHON=ON",
                 "-DICHKIT_BUILD_TESTS=OFF", "-DICHKIT_BUILD_BENCHMARKS=OFF",
                 f"-DPython_EXECUTABLE={sys.executable}", "-DPYBIND11_FINDPYTHON=ON"],
                cwd=build_dir)
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "_core", "-j", jobs])
        built = sorted((build_dir / "python" / "ichkit").glob("_core*.so"))
        if not built:
            raise RuntimeError(f"CMake did not produce ichkit/_core*.so under {build_dir}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[-1], dest)


setup(ext_modules=[CMakeExtension("ichkit._core")], cmdclass={"build_ext": CMakeBuild})
