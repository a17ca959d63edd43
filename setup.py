"""Packaging for csctracker-ai-core (setuptools)."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "csctracker_ai_core" / "_version.py").read_text()
).group(1)

setup(
    name="csctracker-ai-core",
    version=VERSION,
    description=(
        "Google Gemini on a pool of API keys (free first, paid as fallback) with "
        "quota-aware rotation and ClickHouse telemetry."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["csctracker_ai_core", "csctracker_ai_core.*"]),
    package_data={"csctracker_ai_core": ["py.typed", "data/*.json"]},
    install_requires=[
        "google-genai>=1.70",
        "clickhouse-connect>=0.8",
        'tzdata; platform_system == "Windows"',
    ],
    extras_require={
        "embedded": ["clickhouse-connect[chdb]>=0.8", "chdb>=3.0"],
        "redis": ["redis>=5.0"],
        "dev": ["chdb>=3.0", "redis>=5.0", "pytest>=8", "pytest-mock>=3.12"],
    },
    entry_points={"console_scripts": ["csc-ai=csctracker_ai_core.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Typing :: Typed",
    ],
)
