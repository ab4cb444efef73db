"""numamove: move memory between NUMA nodes fast (metadata lives here, the C in csrc/)."""

from setuptools import find_packages, setup

setup(
    name="numamove",
    version="0.1.0",
    description="Move memory between NUMA nodes with pinned multi-threaded copies",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["numamove", "numamove.*"]),
    package_data={"numamove": ["py.typed", "_native_lib.pyi"]},
    setup_requires=["cffi>=1.15"],
    install_requires=["cffi>=1.15", "click>=8.0", "psutil>=5.9", "py-libnuma>=1.2"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "numpy", "jsonschema>=4", "matplotlib", "wheel", "ansible-core>=2.16"],
        "plot": ["matplotlib"],
        "lint": ["ruff", "mypy", "types-psutil", "types-jsonschema"],
    },
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    data_files=[("share/man/man8", ["man/numamove.8"])],  # `make man` regenerates it from the CLI help
    # a launcher of its own rather than console_scripts: pip's generated wrapper imports re (~6 ms of
    # every start); setuptools rewrites its "#!python" to the installing interpreter
    scripts=["bin/numamove"],
    classifiers=["Operating System :: POSIX :: Linux", "Programming Language :: C",
                 "Programming Language :: Python :: 3"],
)
