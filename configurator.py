"""
Command-line configuration for train.py and sample.py, after nanoGPT's "poor man's configurator", but strict:

    python train.py [config/file.py ...] [--key=value ...]

A config file is ordinary Python (your own file, so it is exec'd) that assigns some of the known keys; later files
and --key=value overrides win. Values are parsed with ast.literal_eval, so --max_iters=100, --bias=False and
--lr=3e-4 get real types; a key whose default is a string takes the text exactly as typed (--out_dir=out-cpu).
An unknown key or a value of the wrong type stops the program with one line naming the key and the expected type,
instead of silently training the wrong thing.
"""

import ast
import sys
from pathlib import Path

TYPE_NAMES = {bool: "bool (True/False)", int: "int", float: "float", str: "str"}


def type_name(default):
    return TYPE_NAMES.get(type(default), type(default).__name__)


def check_value(key, value, default, source):
    """Return value converted to the default's type, or stop with a one-line error."""
    want = type(default)
    if want is float and type(value) in (int, float):  # 1 is a fine float; True is not
        return float(value)
    if type(value) is want:
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise SystemExit(f"error: {source}{key} expects {type_name(default)}, got {shown}")


def parse_override(arg, config):
    """'--key=value' (or '--flag' for a bool) -> (key, typed value)."""
    key, eq, raw = arg[2:].partition("=")
    if key not in config:
        raise SystemExit(f"error: unknown option --{key} (see --help for the known keys)")
    default = config[key]
    if not eq:
        if type(default) is bool:
            return key, True
        raise SystemExit(f"error: --{key} needs a value: --{key}=<{type_name(default)}>")
    if type(default) is str:
        return key, raw  # text as typed: --out_dir=123 is "123", --start='a' keeps its quotes
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # not a literal: reported as the wrong type below
    except (MemoryError, RecursionError):  # e.g. thousands of nested brackets
        raise SystemExit(f"error: --{key}: value too large or too deeply nested to parse") from None
    return key, check_value(key, value, default, "--")


def exec_config_file(path, config):
    """Run a config file with the current config as its namespace and apply the known keys it sets."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: config file {path} not found")
    namespace = dict(config)
    try:
        exec(compile(p.read_text(), str(p), "exec"), namespace)
    except Exception as e:  # the user's own file: say where, not a traceback into us
        raise SystemExit(f"error: config file {path} failed: {type(e).__name__}: {e}")
    for key, value in namespace.items():
        if key.startswith("_") or key == "__builtins__" or callable(value) or type(value).__name__ == "module":
            continue  # helpers, imports and functions a config file may define for itself
        if key not in config:
            raise SystemExit(f"error: unknown key '{key}' in config file {path} (see --help for the known keys)")
        config[key] = check_value(key, value, config[key], f"{path}: ")


def usage(prog, defaults, doc=""):
    lines = [f"usage: python {prog} [config/file.py ...] [--key=value ...]", ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("keys (default):")
    width = max(len(k) for k in defaults) + 2
    for key, value in defaults.items():
        lines.append(f"  --{key:<{width}} {value!r}   [{type_name(value)}]")
    return "\n".join(lines)


def configure(defaults, argv=None, prog="train.py", doc=""):
    """Return a new dict: defaults, updated by config files then --key=value overrides, in argv order."""
    argv = sys.argv[1:] if argv is None else argv
    config = dict(defaults)
    if any(a in ("-h", "--help") for a in argv):
        print(usage(prog, defaults, doc))
        raise SystemExit(0)
    for arg in argv:
        if arg.startswith("--"):
            key, value = parse_override(arg, config)
            config[key] = value
        elif arg.endswith(".py"):
            exec_config_file(arg, config)
        else:
            raise SystemExit(f"error: unexpected argument {arg!r}: give a config/file.py or --key=value")
    return config
